//! What runs on a host: Cluster API bootstrap data (cloud-config or ignition) turned into one
//! host-side job script, after rendering `## template: jinja` documents with the machine's
//! metadata. Anything the data asks for that capssh cannot do exactly is refused as a whole,
//! before anything runs on the host.
