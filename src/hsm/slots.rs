//! Finding a token's slot in its module: by label or slot id, looked for again with a fresh
//! initialisation of the module when a concurrent writer hid it (SoftHSM2), and the
//! checks that need no login (does the token exist, what is its serial number).

use std::sync::Arc;

use cryptoki::context::Pkcs11;
use cryptoki::slot::Slot;

use super::spec::{TokenSelector, TokenSpec};
use super::{HsmError, modules};

/// Checks that the module may be loaded and holds the token, without logging in (what
/// creating a custom key store checks; the PIN is checked when it connects).
pub fn probe(spec: &TokenSpec) -> Result<(), HsmError> {
    find_slot_retrying(spec).map(|_| ())
}

/// The serial number of the token `spec` names (what tells two spellings of one token
/// apart from two tokens: a label and a slot id may name the same one).
pub fn serial(spec: &TokenSpec) -> Result<String, HsmError> {
    let (ctx, slot) = find_slot_retrying(spec)?;
    let info = ctx.get_token_info(slot).map_err(|e| HsmError::Device {
        token: spec.to_string(),
        operation: "C_GetTokenInfo",
        why: e.to_string(),
    })?;
    Ok(info.serial_number().trim_end().to_string())
}

/// How often a token that is not in the slot list is looked for again, with a fresh
/// initialisation of its module, before it counts as missing.
const SLOT_ATTEMPTS: u32 = 5;

/// The module's context and the token's slot. A token another process was rewriting when
/// this process initialised the module, or is rewriting now, is missing from its slot list
/// (SoftHSM2's file store), so a missing token is looked for again: after re-initialising
/// the module when nothing in this process is using it, else as the module is (about half
/// a second in all for a token that is really absent).
pub(super) fn find_slot_retrying(spec: &TokenSpec) -> Result<(Arc<Pkcs11>, Slot), HsmError> {
    let mut attempt = 1;
    loop {
        let ctx = modules::load(&spec.module)?;
        let missing = match find_slot(&ctx, spec) {
            Ok(slot) => return Ok((ctx, slot)),
            Err(e @ HsmError::TokenNotFound { .. }) => e,
            Err(e) => return Err(e),
        };
        drop(ctx);
        if attempt == SLOT_ATTEMPTS {
            return Err(missing);
        }
        // In use here (another store's or region's connection): asked again as it is.
        let _ = modules::reload_if_unused(&spec.module);
        std::thread::sleep(std::time::Duration::from_millis(40 * attempt as u64));
        attempt += 1;
    }
}

fn find_slot(ctx: &Pkcs11, spec: &TokenSpec) -> Result<Slot, HsmError> {
    let missing = || HsmError::TokenNotFound {
        module: spec.module.clone(),
        token: spec.token.to_string(),
    };
    let slots = ctx.get_slots_with_token().map_err(|e| HsmError::Device {
        token: spec.to_string(),
        operation: "C_GetSlotList",
        why: e.to_string(),
    })?;
    for slot in slots {
        let matches = match &spec.token {
            TokenSelector::Slot(id) => slot.id() == *id,
            TokenSelector::Label(label) => ctx
                .get_token_info(slot)
                .is_ok_and(|i| i.label().trim_end() == label.as_str()),
        };
        if matches {
            return Ok(slot);
        }
    }
    Err(missing())
}
