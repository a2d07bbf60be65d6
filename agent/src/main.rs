//! `sockmesh`: the node agent and its command-line interface.
fn main() {}
