//! Client state machine (being written).
