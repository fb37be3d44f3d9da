//! The seed's GPT: tied embedding/lm-head `W`, rotary attention, pre-RMSNorm blocks with the
//! `1/sqrt(2·n_layer)` attention scale, exact-GELU MLP, no biases, optional outer norms.

pub mod compute;
pub mod gpt;
pub mod loss;
pub mod norm;
pub mod rotary;
pub mod weights;

pub use compute::Compute;
pub use gpt::{attn_scale_for, Block, BlockLayout, Gpt, Ropes};
pub use norm::apply_norm;
