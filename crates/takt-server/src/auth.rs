//! API tokens: the view is `takt_views::token` (folded from the log); scopes and permissions
//! are the model's. This module makes new secrets and ids.

pub use takt_api::{Permission, Scope};
pub use takt_views::token::{TokenInfo, Tokens, hash_secret};

/// A new random secret: `takt_` and 40 hex digits.
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 20];
    getrandom::fill(&mut b)?;
    Ok(format!("takt_{}", hex::encode(b)))
}

pub fn new_id() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b)?;
    Ok(hex::encode(b))
}
