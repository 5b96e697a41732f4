//! Turmoil simulations of Breeze: see the tests.
