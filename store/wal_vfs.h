// An SQLite VFS that writes a WAL transaction with one system call per 30 pages instead of two per page.
//
// SQLite appends a WAL frame as two writes (the 24-byte frame header, then the page), each a
// pwrite(2); a group transaction of a few hundred pages made a few hundred system calls on the
// store's writer thread. This VFS wraps the default one and, for WAL files only, gathers
// appended frames in memory and hands them to the file in writes of up to 120 KiB (about 30
// pages; the unix VFS takes no more per call) when the transaction's commit frame has been
// written (its header carries the database size, which no other frame does), before anything
// else reads, syncs, truncates or closes the file, or when 4 MiB are gathered. Writes that do not
// append (the WAL header, a page overwritten in place, checksums rewritten after a commit), every
// other operation and every other file go straight through.
//
// Nothing that was durable before is less durable now. A commit returns only after its frames
// were written (an error writing them fails the commit, as before), and readers see frames only
// once the commit has updated the WAL index, which happens after that write. Frames of a
// transaction not yet committed are never read by other connections; the writing connection
// reading one back (a spilled page) gets the buffer written out first.
#pragma once

namespace herald {

// Registers the VFS (once; not as the default) and returns its name for sqlite3_open_v2.
// Returns nullptr if it could not be registered (the default VFS is then used).
const char* WalBufferVfs();

}  // namespace herald
