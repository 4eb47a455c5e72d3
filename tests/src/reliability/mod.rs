//! The reliability suite's parts: what a fault run records ([`history`]) and the checks over
//! it ([`check`]).

pub mod check;
pub mod deploys;
pub mod faults;
pub mod run;
pub mod history;
pub mod leases;
pub mod proxy;
pub mod recipes;
pub mod watchers;
pub mod workload;
#[cfg(test)]
mod tests;
