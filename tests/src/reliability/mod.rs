//! The reliability suite's parts: what a fault run records ([`history`]) and the checks over
//! it ([`check`]).

pub mod check;
pub mod run;
pub mod history;
#[cfg(test)]
mod tests;
