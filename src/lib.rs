//! lvs-operator: LVS Direct Routing load balancing, run declaratively from `LvsService` objects.
#![forbid(unsafe_code)]
