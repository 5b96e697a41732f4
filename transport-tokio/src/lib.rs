//! The tokio host of the Breeze core: TCP in, core outputs performed.
