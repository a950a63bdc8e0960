//! Buffers lent to connections while they have something to read or write, and taken back
//! while they idle: an idle keep-alive connection holds no buffer at all (as nginx's and
//! ntex's do not). Each worker thread keeps a short free list, so lending costs a push and
//! a pop; what does not fit in it goes back to the allocator.

use std::cell::RefCell;

use bytes::BytesMut;

/// The most buffers of each kind one thread keeps for reuse.
const KEPT_PER_THREAD: usize = 64;

thread_local! {
    static READ: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static WRITE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A read buffer of at least `size` bytes.
pub(crate) fn take_read(size: usize) -> BytesMut {
    let reused = READ.with(|p| p.borrow_mut().pop());
    match reused {
        Some(mut b) if b.capacity() >= size => {
            b.clear();
            b
        }
        _ => BytesMut::with_capacity(size),
    }
}

/// Gives an empty read buffer back. One still shared with data handed out (a request body
/// still in use) is dropped instead: its memory goes when the last piece does.
pub(crate) fn give_read(mut buf: BytesMut, size: usize) {
    if !buf.is_empty() || buf.capacity() == 0 {
        return;
    }
    if !buf.try_reclaim(size) {
        return;
    }
    READ.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < KEPT_PER_THREAD {
            p.push(buf);
        }
    });
}

/// A write buffer of at least `size` bytes.
pub(crate) fn take_write(size: usize) -> Vec<u8> {
    let reused = WRITE.with(|p| p.borrow_mut().pop());
    match reused {
        Some(mut b) if b.capacity() >= size => {
            b.clear();
            b
        }
        _ => Vec::with_capacity(size),
    }
}

/// Gives a write buffer back (buffers grown far past `size` are dropped).
pub(crate) fn give_write(mut buf: Vec<u8>, size: usize) {
    if buf.capacity() < size || buf.capacity() > size * 4 {
        return;
    }
    buf.clear();
    WRITE.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < KEPT_PER_THREAD {
            p.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_on_the_same_thread() {
        let b = take_read(4096);
        let at = b.as_ptr();
        give_read(b, 4096);
        let again = take_read(4096);
        assert_eq!(again.as_ptr(), at);
        let w = take_write(4096);
        let at = w.as_ptr();
        give_write(w, 4096);
        let again = take_write(4096);
        assert_eq!(again.as_ptr(), at);
    }

    #[test]
    fn a_buffer_still_shared_is_not_reused() {
        let mut b = take_read(4096);
        b.extend_from_slice(b"hello");
        let held = b.split_to(5).freeze();
        let at = b.as_ptr();
        give_read(b, 4096);
        let next = take_read(4096);
        assert_ne!(next.as_ptr(), at);
        assert_eq!(&held[..], b"hello");
    }
}
