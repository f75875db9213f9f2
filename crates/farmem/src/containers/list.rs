//! [`FarList`] (a chunked sequence with cursors), [`FarQueue`] and [`FarStack`].
//!
//! A list is a deque of nodes; each node is a [`FarSlice`] holding a contiguous run of elements
//! `start..start + len` of a fixed capacity. Pushing at either end fills the end node; inserting
//! or removing in the middle shifts within one node or splits it. Whenever an operation enters a
//! node that is not local, the next nodes *in the direction of travel* are fetched in one batch,
//! so walking, draining a queue from the front or a stack from the back costs one round trip per
//! batch of nodes.

use std::collections::VecDeque;

use bytemuck::Pod;

use super::error::{ContainerError, Result};
use super::prefetch::{self, Window};
use crate::{FarSlice, Runtime};

struct Node<T: Pod> {
    data: FarSlice<T>,
    start: usize,
    len: usize,
}

/// A sequence of `T` in far-memory nodes, with cheap pushes and pops at both ends and cursors
/// for walking, inserting and removing anywhere.
///
/// ```
/// use farmem::{Runtime, RuntimeConfig};
/// use farmem::containers::FarList;
/// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
/// let mut l = FarList::new(&rt);
/// for i in 0..10u32 {
///     l.push_back(i).unwrap();
/// }
/// l.push_front(100).unwrap();
/// let mut c = l.cursor_front();
/// c.move_next().unwrap();              // at element 0
/// c.insert_before(50).unwrap();        // 100, 50, 0, 1, ...
/// c.remove_current().unwrap();         // removes 0, now at 1
/// assert_eq!(c.current().unwrap(), Some(1));
/// assert_eq!(l.to_vec().unwrap()[..4], [100, 50, 1, 2]);
/// assert_eq!(l.pop_back().unwrap(), Some(9));
/// ```
pub struct FarList<T: Pod> {
    rt: Runtime,
    nodes: VecDeque<Node<T>>,
    len: usize,
    cap: usize,
    window: Window,
}

impl<T: Pod> std::fmt::Debug for FarList<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FarList")
            .field("len", &self.len)
            .field("nodes", &self.nodes.len())
            .finish()
    }
}

impl<T: Pod + Send + Sync> FarList<T> {
    /// An empty list with nodes of about 16 KiB.
    pub fn new(rt: &Runtime) -> Self {
        Self::with_node_len(rt, ((16 << 10) / size_of::<T>().max(1)).max(2))
    }

    /// An empty list with nodes of `node_len` elements (at least 2).
    pub fn with_node_len(rt: &Runtime, node_len: usize) -> Self {
        let cap = node_len.max(2);
        Self {
            rt: rt.clone(),
            nodes: VecDeque::new(),
            len: 0,
            cap,
            window: Window::for_objects(rt, cap * size_of::<T>()),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fetches the nodes from `n` onwards in the direction of travel if `n` is not local.
    fn ahead(&self, n: usize, forward: bool) {
        let Some(node) = self.nodes.get(n) else {
            return;
        };
        if node.data.is_local() {
            return;
        }
        let b = self.window.batch;
        let r = if forward {
            self.rt.prefetch(
                self.nodes
                    .range(n..(n + b).min(self.nodes.len()))
                    .map(|x| &x.data),
            )
        } else {
            self.rt.prefetch(
                self.nodes
                    .range(n.saturating_sub(b - 1)..=n)
                    .map(|x| &x.data),
            )
        };
        if let Err(e) = r {
            tracing::debug!("list prefetch failed: {e}");
        }
    }

    fn read_at(&self, n: usize, i: usize, forward: bool) -> Result<T> {
        self.ahead(n, forward);
        let node = &self.nodes[n];
        let s = self.rt.scope();
        Ok(node.data.read(&s)?[node.start + i])
    }

    fn write_at(&mut self, n: usize, i: usize, v: T) -> Result<()> {
        let rt = self.rt.clone();
        let node = &mut self.nodes[n];
        let s = rt.scope();
        node.data.write(&s)?[node.start + i] = v;
        Ok(())
    }

    fn new_node(&self, start: usize) -> Result<Node<T>> {
        Ok(Node {
            data: FarSlice::new_zeroed(&self.rt, self.cap)?,
            start,
            len: 0,
        })
    }

    /// Appends at the back.
    ///
    /// # Errors
    /// The runtime's error (nothing changes then).
    pub fn push_back(&mut self, v: T) -> Result<()> {
        if self
            .nodes
            .back()
            .is_none_or(|b| b.start + b.len == self.cap)
        {
            let n = self.new_node(0)?;
            self.nodes.push_back(n);
        }
        let n = self.nodes.len() - 1;
        let i = self.nodes[n].len;
        self.write_at(n, i, v)?;
        self.nodes[n].len += 1;
        self.len += 1;
        Ok(())
    }

    /// Prepends at the front.
    ///
    /// # Errors
    /// The runtime's error (nothing changes then).
    pub fn push_front(&mut self, v: T) -> Result<()> {
        if self.nodes.front().is_none_or(|f| f.start == 0) {
            let n = self.new_node(self.cap)?;
            self.nodes.push_front(n);
        }
        let rt = self.rt.clone();
        let node = &mut self.nodes[0];
        let s = rt.scope();
        node.data.write(&s)?[node.start - 1] = v;
        node.start -= 1;
        node.len += 1;
        self.len += 1;
        Ok(())
    }

    /// Removes the last element.
    ///
    /// # Errors
    /// The runtime's error (nothing changes then).
    pub fn pop_back(&mut self) -> Result<Option<T>> {
        let Some(n) = self.nodes.len().checked_sub(1) else {
            return Ok(None);
        };
        let v = self.read_at(n, self.nodes[n].len - 1, false)?;
        self.nodes[n].len -= 1;
        if self.nodes[n].len == 0 {
            self.nodes.pop_back();
        }
        self.len -= 1;
        Ok(Some(v))
    }

    /// Removes the first element.
    ///
    /// # Errors
    /// The runtime's error (nothing changes then).
    pub fn pop_front(&mut self) -> Result<Option<T>> {
        if self.nodes.is_empty() {
            return Ok(None);
        }
        let v = self.read_at(0, 0, true)?;
        let f = &mut self.nodes[0];
        f.start += 1;
        f.len -= 1;
        if f.len == 0 {
            self.nodes.pop_front();
        }
        self.len -= 1;
        Ok(Some(v))
    }

    /// The first element.
    ///
    /// # Errors
    /// The runtime's error.
    pub fn front(&self) -> Result<Option<T>> {
        if self.nodes.is_empty() {
            return Ok(None);
        }
        self.read_at(0, 0, true).map(Some)
    }

    /// The last element.
    ///
    /// # Errors
    /// The runtime's error.
    pub fn back(&self) -> Result<Option<T>> {
        let Some(n) = self.nodes.len().checked_sub(1) else {
            return Ok(None);
        };
        self.read_at(n, self.nodes[n].len - 1, false).map(Some)
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.nodes.clear();
        self.len = 0;
    }

    fn scan_dir(&self, forward: bool, mut f: impl FnMut(&T)) -> Result<()> {
        let mut objs: Vec<&FarSlice<T>> = self.nodes.iter().map(|n| &n.data).collect();
        if !forward {
            objs.reverse();
        }
        prefetch::scan(&self.rt, &objs, self.window, |i| {
            let node = &self.nodes[if forward { i } else { self.nodes.len() - 1 - i }];
            let s = self.rt.scope();
            let d = &node.data.read(&s)?[node.start..node.start + node.len];
            if forward {
                d.iter().for_each(&mut f);
            } else {
                d.iter().rev().for_each(&mut f);
            }
            Ok(())
        })
    }

    /// Calls `f` with every element front to back, prefetching ahead.
    ///
    /// # Errors
    /// The runtime's error.
    pub fn for_each(&self, f: impl FnMut(&T)) -> Result<()> {
        self.scan_dir(true, f)
    }

    /// Calls `f` with every element back to front, prefetching ahead (backwards).
    ///
    /// # Errors
    /// The runtime's error.
    pub fn for_each_rev(&self, f: impl FnMut(&T)) -> Result<()> {
        self.scan_dir(false, f)
    }

    /// Copies the elements into a local `Vec`, front to back.
    ///
    /// # Errors
    /// The runtime's error.
    pub fn to_vec(&self) -> Result<Vec<T>> {
        let mut v = Vec::with_capacity(self.len);
        self.for_each(|x| v.push(*x))?;
        Ok(v)
    }

    /// A cursor at the first element (or at the end of an empty list).
    pub fn cursor_front(&mut self) -> Cursor<'_, T> {
        Cursor {
            list: self,
            node: 0,
            off: 0,
        }
    }

    /// A cursor at the last element.
    pub fn cursor_back(&mut self) -> Cursor<'_, T> {
        let node = self.nodes.len().saturating_sub(1);
        let off = self.nodes.get(node).map_or(0, |n| n.len - 1);
        Cursor {
            list: self,
            node,
            off,
        }
    }

    /// Inserts `v` before element `off` of node `n` (`off <= len`); returns its new position.
    fn insert_in(&mut self, n: usize, off: usize, v: T) -> Result<(usize, usize)> {
        if n == self.nodes.len() {
            self.push_back(v)?;
            let last = self.nodes.len() - 1;
            return Ok((last, self.nodes[last].len - 1));
        }
        let rt = self.rt.clone();
        let cap = self.cap;
        if self.nodes[n].len == cap {
            // Split: move the upper half into a new node after this one.
            let half = cap / 2;
            let mut fresh = self.new_node(0)?;
            {
                let s = rt.scope();
                let node = &self.nodes[n];
                let src = &node.data.read(&s)?[node.start + half..node.start + node.len];
                fresh.data.write(&s)?[..src.len()].copy_from_slice(src);
                fresh.len = src.len();
            }
            self.nodes[n].len = half;
            self.nodes.insert(n + 1, fresh);
            return if off <= half {
                self.insert_in(n, off, v)
            } else {
                self.insert_in(n + 1, off - half, v)
            };
        }
        let node = &mut self.nodes[n];
        let s = rt.scope();
        let d = node.data.write(&s)?;
        if node.start + node.len < cap {
            let at = node.start + off;
            d.copy_within(at..node.start + node.len, at + 1);
            d[at] = v;
        } else {
            // Room only at the front: shift the head left.
            let at = node.start + off;
            d.copy_within(node.start..at, node.start - 1);
            d[at - 1] = v;
            node.start -= 1;
        }
        node.len += 1;
        self.len += 1;
        Ok((n, off))
    }

    /// Removes element `off` of node `n`; returns it.
    fn remove_in(&mut self, n: usize, off: usize) -> Result<T> {
        let rt = self.rt.clone();
        let node = &mut self.nodes[n];
        let s = rt.scope();
        let d = node.data.write(&s)?;
        let at = node.start + off;
        let v = d[at];
        d.copy_within(at + 1..node.start + node.len, at);
        node.len -= 1;
        drop(s);
        if node.len == 0 {
            self.nodes.remove(n);
        }
        self.len -= 1;
        Ok(v)
    }
}

/// A position in a [`FarList`]: at an element, or at the end (past the last element).
///
/// Moving into a node that is not local fetches the following nodes in the direction of travel
/// in one batch.
pub struct Cursor<'a, T: Pod> {
    list: &'a mut FarList<T>,
    node: usize,
    off: usize,
}

impl<T: Pod> std::fmt::Debug for Cursor<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursor")
            .field("node", &self.node)
            .field("off", &self.off)
            .finish_non_exhaustive()
    }
}

impl<T: Pod + Send + Sync> Cursor<'_, T> {
    fn at_end(&self) -> bool {
        self.node >= self.list.nodes.len()
    }

    /// The element under the cursor (`None` at the end).
    ///
    /// # Errors
    /// The runtime's error.
    pub fn current(&self) -> Result<Option<T>> {
        if self.at_end() {
            return Ok(None);
        }
        self.list.read_at(self.node, self.off, true).map(Some)
    }

    /// Replaces the element under the cursor.
    ///
    /// # Errors
    /// [`ContainerError::IndexOutOfBounds`] at the end; the runtime's error.
    pub fn set_current(&mut self, v: T) -> Result<()> {
        if self.at_end() {
            return Err(ContainerError::IndexOutOfBounds {
                index: self.list.len,
                len: self.list.len,
            });
        }
        self.list.write_at(self.node, self.off, v)
    }

    /// Moves to the next element (or to the end). Returns whether it is at an element.
    ///
    /// # Errors
    /// The runtime's error from prefetching is ignored; this never fails today but may report
    /// fetch errors in the future.
    pub fn move_next(&mut self) -> Result<bool> {
        if self.at_end() {
            return Ok(false);
        }
        self.off += 1;
        if self.off == self.list.nodes[self.node].len {
            self.node += 1;
            self.off = 0;
            self.list.ahead(self.node, true);
        }
        Ok(!self.at_end())
    }

    /// Moves to the previous element. Returns false (staying put) at the first element.
    ///
    /// # Errors
    /// As [`Cursor::move_next`].
    pub fn move_prev(&mut self) -> Result<bool> {
        if self.off > 0 {
            self.off -= 1;
            return Ok(true);
        }
        if self.node == 0 {
            return Ok(false);
        }
        self.node -= 1;
        self.off = self.list.nodes[self.node].len - 1;
        self.list.ahead(self.node, false);
        Ok(true)
    }

    /// Inserts `v` before the cursor (at the end: appends); the cursor stays on its element.
    ///
    /// # Errors
    /// The runtime's error (nothing changes then).
    pub fn insert_before(&mut self, v: T) -> Result<()> {
        let (n, o) = self.list.insert_in(self.node, self.off, v)?;
        // The cursor's element now follows the inserted one.
        self.node = n;
        self.off = o;
        if self.off + 1 < self.list.nodes[self.node].len {
            self.off += 1;
        } else {
            self.node += 1;
            self.off = 0;
        }
        Ok(())
    }

    /// Removes the element under the cursor and returns it; the cursor moves to the next one.
    ///
    /// # Errors
    /// The runtime's error (nothing changes then).
    pub fn remove_current(&mut self) -> Result<Option<T>> {
        if self.at_end() {
            return Ok(None);
        }
        let node_len = self.list.nodes[self.node].len;
        let v = self.list.remove_in(self.node, self.off)?;
        if node_len == 1 {
            self.off = 0; // the node vanished; the next node moved into its place
        } else if self.off == node_len - 1 {
            self.node += 1;
            self.off = 0;
        }
        Ok(Some(v))
    }
}

/// A FIFO queue in far memory: push at the back, pop at the front (prefetching forwards).
///
/// ```
/// use farmem::{Runtime, RuntimeConfig};
/// use farmem::containers::FarQueue;
/// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
/// let mut q = FarQueue::new(&rt);
/// q.push(1u8).unwrap();
/// q.push(2).unwrap();
/// assert_eq!(q.pop().unwrap(), Some(1));
/// ```
#[derive(Debug)]
pub struct FarQueue<T: Pod>(FarList<T>);

impl<T: Pod + Send + Sync> FarQueue<T> {
    /// An empty queue.
    pub fn new(rt: &Runtime) -> Self {
        Self(FarList::new(rt))
    }
    /// An empty queue with nodes of `node_len` elements.
    pub fn with_node_len(rt: &Runtime, node_len: usize) -> Self {
        Self(FarList::with_node_len(rt, node_len))
    }
    /// Enqueues at the back.
    ///
    /// # Errors
    /// The runtime's error.
    pub fn push(&mut self, v: T) -> Result<()> {
        self.0.push_back(v)
    }
    /// Dequeues from the front.
    ///
    /// # Errors
    /// The runtime's error.
    pub fn pop(&mut self) -> Result<Option<T>> {
        self.0.pop_front()
    }
    /// The next element to dequeue.
    ///
    /// # Errors
    /// The runtime's error.
    pub fn peek(&self) -> Result<Option<T>> {
        self.0.front()
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The underlying list (front = next out).
    pub fn as_list(&self) -> &FarList<T> {
        &self.0
    }
}

/// A LIFO stack in far memory: push and pop at the back (prefetching backwards).
///
/// ```
/// use farmem::{Runtime, RuntimeConfig};
/// use farmem::containers::FarStack;
/// let rt = Runtime::new(RuntimeConfig::new(16 << 20)).unwrap();
/// let mut s = FarStack::new(&rt);
/// s.push(1u8).unwrap();
/// s.push(2).unwrap();
/// assert_eq!(s.pop().unwrap(), Some(2));
/// ```
#[derive(Debug)]
pub struct FarStack<T: Pod>(FarList<T>);

impl<T: Pod + Send + Sync> FarStack<T> {
    /// An empty stack.
    pub fn new(rt: &Runtime) -> Self {
        Self(FarList::new(rt))
    }
    /// An empty stack with nodes of `node_len` elements.
    pub fn with_node_len(rt: &Runtime, node_len: usize) -> Self {
        Self(FarList::with_node_len(rt, node_len))
    }
    /// Pushes on top.
    ///
    /// # Errors
    /// The runtime's error.
    pub fn push(&mut self, v: T) -> Result<()> {
        self.0.push_back(v)
    }
    /// Pops the top.
    ///
    /// # Errors
    /// The runtime's error.
    pub fn pop(&mut self) -> Result<Option<T>> {
        self.0.pop_back()
    }
    /// The top element.
    ///
    /// # Errors
    /// The runtime's error.
    pub fn peek(&self) -> Result<Option<T>> {
        self.0.back()
    }
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether the stack is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The underlying list (back = top).
    pub fn as_list(&self) -> &FarList<T> {
        &self.0
    }
}
