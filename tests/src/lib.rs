//! Test bed: nodes and pods built from network namespaces, veths and cgroups on one machine.
