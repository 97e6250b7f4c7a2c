//! Key and identity policies in the AWS JSON policy language (being written).
