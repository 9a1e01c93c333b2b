//! The fault suite: the server under the failures it must survive without
//! losing or inventing a message. Each scenario runs a load, breaks something
//! (the disk, the process, the peer, the client), and counts afterwards at a
//! sink or in the spool what got a 250 against what is there.

mod disk;
mod kill;
mod peers;
mod slow_clients;
