//! The reliability suite's parts: what a fault run records ([`history`]) and the checks over
//! it ([`check`]).

pub mod check;
pub mod run;
pub mod history;
pub mod proxy;
#[cfg(test)]
mod tests;
