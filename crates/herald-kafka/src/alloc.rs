//! [`LazyLargeAllocator`]: the system allocator, except that very large allocations are
//! reserved lazily (`mmap` with `MAP_NORESERVE`).
//!
//! Why: `kafka-protocol` 0.18 sizes a decoded array with `Vec::with_capacity(n)` where
//! `n` is read from the request before any element is. A 10-byte request can claim 2^31
//! elements; with the plain system allocator a reservation larger than RAM + swap fails
//! and Rust aborts the whole process. Reserved lazily, the untouched reservation costs
//! nothing, the decoder fails on the missing elements a moment later and the memory is
//! returned. Binaries that decode Kafka requests (the `herald` binary, this crate's
//! tests, the fuzz target) install it with `#[global_allocator]`.
//!
//! Only allocations of at least [`LARGE_BYTES`] take the lazy path; everything else is the
//! system allocator unchanged. Memory that is really written is committed page by page as
//! usual. Under strict overcommit accounting (`vm.overcommit_memory = 2`) the kernel
//! ignores `MAP_NORESERVE` and such a request fails as before.

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations from this size up are reserved lazily.
pub const LARGE_BYTES: usize = 1 << 30;
/// Alignment `mmap` guarantees (a page).
const PAGE_BYTES: usize = 4096;

/// See the module docs.
pub struct LazyLargeAllocator;

fn is_large(size: usize, align: usize) -> bool {
    cfg!(target_os = "linux") && size >= LARGE_BYTES && align <= PAGE_BYTES
}

#[cfg(target_os = "linux")]
fn map_lazily(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping touches no existing memory; the result is
    // checked against MAP_FAILED before use.
    let pointer = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if pointer == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        pointer.cast()
    }
}

#[cfg(not(target_os = "linux"))]
fn map_lazily(_size: usize) -> *mut u8 {
    std::ptr::null_mut()
}

#[cfg(target_os = "linux")]
fn unmap(pointer: *mut u8, size: usize) {
    // SAFETY: `pointer` came from `map_lazily(size)` (the caller's layout says so).
    unsafe {
        libc::munmap(pointer.cast(), size);
    }
}

#[cfg(not(target_os = "linux"))]
fn unmap(_pointer: *mut u8, _size: usize) {}

// SAFETY: large blocks come from mmap (page aligned, zero filled, at least `size` bytes)
// and go back to munmap with the same size; everything else is `System`'s.
unsafe impl GlobalAlloc for LazyLargeAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size(), layout.align()) {
            map_lazily(layout.size())
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_large(layout.size(), layout.align()) {
            map_lazily(layout.size())
        } else {
            // SAFETY: forwarded with the caller's guarantees.
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        if is_large(layout.size(), layout.align()) {
            unmap(pointer, layout.size());
        } else {
            // SAFETY: `pointer` came from `System` with this layout.
            unsafe { System.dealloc(pointer, layout) }
        }
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old_large = is_large(layout.size(), layout.align());
        let new_large = is_large(new_size, layout.align());
        if !old_large && !new_large {
            // SAFETY: forwarded with the caller's guarantees.
            return unsafe { System.realloc(pointer, layout, new_size) };
        }
        // SAFETY: the caller guarantees `new_size` with this alignment is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a fresh block of the new layout; both blocks are valid for the copied
        // length and do not overlap; the old block is released with its own layout.
        unsafe {
            let fresh = self.alloc(new_layout);
            if !fresh.is_null() {
                std::ptr::copy_nonoverlapping(pointer, fresh, layout.size().min(new_size));
                self.dealloc(pointer, layout);
            }
            fresh
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn an_absurd_reservation_succeeds_and_is_returned() {
        // 64 GiB of 64-byte elements: more than this machine has, never touched.
        let mut v: Vec<[u8; 64]> = Vec::with_capacity(1 << 30);
        v.push([1; 64]);
        assert_eq!(v.len(), 1);
        v.reserve(10);
        drop(v);
        let mut grown: Vec<u8> = Vec::with_capacity(super::LARGE_BYTES);
        grown.extend_from_slice(&[7; 100]);
        grown.shrink_to_fit();
        assert_eq!(grown.len(), 100);
    }
}
