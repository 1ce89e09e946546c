//! Errors the user can act on, and how every error reaches the terminal.
//!
//! Exit statuses follow uv's convention: 0 success, 1 when the deploy or the
//! user's input failed (any `UserError` in the chain), 2 when Troops itself
//! failed. A `hint:` line follows the error when we know the fix.

use std::fmt;

/// An error caused by the user's input or deployment, optionally with the fix.
#[derive(Debug)]
pub struct UserError {
    message: String,
    hint: Option<String>,
}

impl UserError {
    pub fn new(message: impl Into<String>) -> UserError {
        UserError {
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> UserError {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {}

/// Shorthand for `Err(UserError::new(format!(...)).into())`.
#[macro_export]
macro_rules! user_error {
    ($($arg:tt)*) => {
        ::anyhow::Error::from($crate::error::UserError::new(format!($($arg)*)))
    };
}

/// An exit status the command has explained already (`troops check`'s 1
/// for drift, 2 for a failed check): nothing more is printed.
#[derive(Debug)]
pub struct Exit(pub i32);

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}

impl std::error::Error for Exit {}

/// Prints `error:`, each cause, then any hint; returns the exit status.
pub fn report(err: &anyhow::Error) -> i32 {
    if let Some(Exit(code)) = err.downcast_ref::<Exit>() {
        return *code;
    }
    eprintln!("error: {err}");
    for cause in err.chain().skip(1) {
        eprintln!("Caused by: {}", cause.to_string().trim_end());
    }
    // anyhow's downcast sees context layers too, which `chain()` items do not.
    let user = err.downcast_ref::<UserError>();
    if let Some(hint) = user.and_then(|u| u.hint.as_deref()) {
        eprintln!("\nhint: {hint}");
    }
    if user.is_some() { 1 } else { 2 }
}
