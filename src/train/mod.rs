//! The Byzantine SGD simulation: data, models and attacks.
