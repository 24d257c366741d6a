//! Code that runs inside the sandbox, in the process the helper clones: as
//! pid 1 of the new namespaces it builds the sandbox (steps S0-S19 of
//! [`setup::enter_sandbox`]), forks the step, and reaps until the step is
//! gone; the forked step hardens itself and execs (steps E1-E16).

pub mod init_loop;
pub mod observe;
pub mod setup;
pub mod status;
