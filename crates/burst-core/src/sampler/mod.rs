//! The sampler's pure parsers: `/proc` text and Apache mod_status replies. The agent's sampler
//! reads the files and fetches the pages; what they say is decided here.

pub mod modstatus;
pub mod procfs;
