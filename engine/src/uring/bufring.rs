//! A provided-buffer ring: a fixed pool of receive buffers the kernel picks from
//! when a multishot receive has data, so an idle connection holds no buffer.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// A buffer the kernel filled: give it back with [`BufRing::recycle`].
#[derive(Debug)]
#[must_use = "a received buffer must be recycled, or the pool shrinks"]
pub struct RecvBuf {
    pub(super) bid: u16,
    pub(super) len: u32,
}

/// The ring of buffer descriptors and the buffers themselves, both
/// preallocated and page-aligned.
pub struct BufRing {
    ring: *mut BufRingEntry,
    ring_layout: Layout,
    data: *mut u8,
    data_layout: Layout,
    entries: u16,
    buf_size: u32,
    /// Our copy of the tail; published to the kernel by [`BufRing::commit`].
    tail: u16,
    bgid: u16,
    /// Buffers the kernel holds or has handed to us and we have not recycled.
    out: u32,
}

const PAGE: usize = 4096;

impl BufRing {
    /// Allocates `entries` buffers of `buf_size` bytes and registers them with
    /// `ring` as buffer group `bgid`.
    pub fn new(ring: &IoUring, entries: u16, buf_size: u32, bgid: u16) -> io::Result<Self> {
        assert!(
            entries.is_power_of_two() && entries <= 32768,
            "entries must be a power of two <= 32768"
        );
        assert!(buf_size > 0, "buffers must not be empty");
        let ring_layout = Layout::from_size_align(
            usize::from(entries) * std::mem::size_of::<BufRingEntry>(),
            PAGE,
        )
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let data_layout = Layout::from_size_align(usize::from(entries) * buf_size as usize, PAGE)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: both layouts have non-zero size (entries > 0, buf_size > 0).
        let ring_mem = unsafe { alloc_zeroed(ring_layout) } as *mut BufRingEntry;
        // SAFETY: as above.
        let data = unsafe { alloc_zeroed(data_layout) };
        if ring_mem.is_null() || data.is_null() {
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                "buffer ring allocation failed",
            ));
        }
        // Fault every page in now: the pool is preallocated, part of the
        // server's footprint from the start, not growth that appears as
        // connections arrive and the kernel first writes into each buffer.
        for offset in (0..data_layout.size()).step_by(PAGE) {
            // SAFETY: offset is inside the allocation just made.
            unsafe { std::ptr::write_volatile(data.add(offset), 0) };
        }
        let mut this = Self {
            ring: ring_mem,
            ring_layout,
            data,
            data_layout,
            entries,
            buf_size,
            tail: 0,
            bgid,
            out: 0,
        };
        // SAFETY: `ring_mem` is page-aligned, `entries` entries long, and lives
        // until `Drop`, which unregisters it before freeing.
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(ring_mem as u64, entries, bgid, 0)?;
        }
        for bid in 0..entries {
            this.push(bid);
        }
        this.commit();
        Ok(this)
    }

    /// The buffer group id to name in receives.
    pub fn bgid(&self) -> u16 {
        self.bgid
    }

    /// Buffers handed out and not yet recycled.
    pub fn outstanding(&self) -> u32 {
        self.out
    }

    /// Takes ownership of buffer `bid` that a completion reported with `len` bytes.
    pub(super) fn take(&mut self, bid: u16, len: u32) -> RecvBuf {
        assert!(
            bid < self.entries,
            "kernel returned buffer id {bid} out of range"
        );
        assert!(
            len <= self.buf_size,
            "kernel reported {len} bytes in a {}-byte buffer",
            self.buf_size
        );
        self.out += 1;
        RecvBuf { bid, len }
    }

    /// The bytes of a received buffer.
    pub fn data(&self, buf: &RecvBuf) -> &[u8] {
        let offset = usize::from(buf.bid) * self.buf_size as usize;
        // SAFETY: `take` checked bid and len against the pool's bounds; the kernel
        // wrote `len` bytes there and will not touch the buffer again until it is
        // recycled, which consumes the `RecvBuf` this borrow depends on.
        unsafe { std::slice::from_raw_parts(self.data.add(offset), buf.len as usize) }
    }

    /// Gives a buffer back to the kernel (visible after [`BufRing::commit`]).
    pub fn recycle(&mut self, buf: RecvBuf) {
        self.out -= 1;
        self.push(buf.bid);
    }

    fn push(&mut self, bid: u16) {
        let idx = usize::from(self.tail & (self.entries - 1));
        let addr = self.data as u64 + u64::from(bid) * u64::from(self.buf_size);
        // SAFETY: idx < entries, inside the ring allocation; the kernel only reads
        // entries between its head and our published tail, and this one is past it.
        let entry = unsafe { &mut *self.ring.add(idx) };
        entry.set_addr(addr);
        entry.set_len(self.buf_size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Publishes recycled buffers to the kernel.
    pub fn commit(&mut self) {
        // SAFETY: the tail field lives in the first entry of the ring allocation,
        // which is valid for the ring's lifetime; the kernel reads it concurrently,
        // so it is written atomically with release ordering after the entries.
        unsafe {
            let tail = BufRingEntry::tail(self.ring) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// Unregisters the ring; after this the memory can be freed.
    pub fn unregister(&mut self, ring: &IoUring) {
        let _ = ring.submitter().unregister_buf_ring(self.bgid);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with these layouts. The engine unregisters
        // the group and cancels every receive before dropping the pool, and the
        // ring is dropped first (field order in `Engine`), so the kernel holds no
        // reference to this memory any more.
        unsafe {
            dealloc(self.ring as *mut u8, self.ring_layout);
            dealloc(self.data, self.data_layout);
        }
    }
}
