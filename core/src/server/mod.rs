//! Server state machine (being written).
