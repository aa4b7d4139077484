//! The durable points ledger.
