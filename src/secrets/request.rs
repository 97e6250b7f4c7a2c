//! Reading a request's members (AWS's names) with AWS's checks: a member of the wrong
//! type or out of its range is InvalidParameterException naming the member.

use serde_json::{Map, Value};

use super::errors::validation;
use crate::aws::AwsError;

pub struct Request<'a> {
    members: &'a Map<String, Value>,
}

impl<'a> Request<'a> {
    pub fn new(body: &'a Value) -> Result<Request<'a>, AwsError> {
        match body {
            Value::Object(members) => Ok(Request { members }),
            _ => Err(validation("request", "the body must be a JSON object")),
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.members.get(name).is_some_and(|v| !v.is_null())
    }

    pub fn str(&self, name: &str) -> Result<Option<&'a str>, AwsError> {
        match self.members.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(validation(name, "must be a string")),
        }
    }

    pub fn required_str(&self, name: &str) -> Result<&'a str, AwsError> {
        self.str(name)?
            .ok_or_else(|| validation(name, "is required"))
    }

    /// A string member of `min..=max` characters.
    pub fn str_len(&self, name: &str, min: usize, max: usize) -> Result<Option<&'a str>, AwsError> {
        let Some(s) = self.str(name)? else {
            return Ok(None);
        };
        let n = s.chars().count();
        if n < min || n > max {
            return Err(validation(
                name,
                format!("must be {min} to {max} characters long, not {n}"),
            ));
        }
        Ok(Some(s))
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, AwsError> {
        match self.members.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(validation(name, "must be true or false")),
        }
    }

    /// An integer member within `min..=max`.
    pub fn int(&self, name: &str, min: i64, max: i64) -> Result<Option<i64>, AwsError> {
        match self.members.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => {
                let n = v
                    .as_i64()
                    .ok_or_else(|| validation(name, "must be an integer"))?;
                if n < min || n > max {
                    return Err(validation(
                        name,
                        format!("must be between {min} and {max}, not {n}"),
                    ));
                }
                Ok(Some(n))
            }
        }
    }

    pub fn strings(&self, name: &str) -> Result<Option<Vec<&'a str>>, AwsError> {
        match self.members.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .ok_or_else(|| validation(name, "must be a list of strings"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(validation(name, "must be a list of strings")),
        }
    }

    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.members.get(name).filter(|v| !v.is_null())
    }
}
