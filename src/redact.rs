//! Scrubbing secrets out of text before it reaches logs, events or conditions.
