//! How a host is touched: SSH connections, commands, uploads and host-side jobs.
