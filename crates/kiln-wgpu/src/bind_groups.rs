//! Bind groups kept for reuse. Making them (wgpu's checks, the driver's descriptor
//! sets) took a fifth of the recording thread's time in a small transformer's steps on
//! lavapipe, and wgpu freed each after its batch ran. A training step repeated from the
//! same state binds the same buffers at the same places (the pool lends the
//! earliest-made free buffer, and the optimizer's step ends a batch), so its bind
//! groups can be found again by what they bind.
//!
//! A kept bind group holds its buffers: the cache is emptied when the pool lets its
//! free buffers go (`GpuDevice::trim_pool`), and keeps two generations of at most
//! `GENERATION` groups, so work that never repeats holds a bounded number.

use std::collections::HashMap;
use std::hash::Hash;

/// Groups one generation holds before it becomes the older one and the oldest is let go:
/// well above the few hundred a training step of the built-in models makes.
const GENERATION: usize = 4096;

/// What a bind group binds: its layout, and each binding's buffer and window.
#[derive(PartialEq, Eq, Hash)]
pub(crate) struct BindKey {
    layout: wgpu::BindGroupLayout,
    buffers: Vec<(u32, wgpu::Buffer, u64, Option<wgpu::BufferSize>)>,
}

impl BindKey {
    /// The key of a bind group of `entries`; `None` if one binds other than a buffer.
    pub(crate) fn of(
        layout: &wgpu::BindGroupLayout,
        entries: &[wgpu::BindGroupEntry<'_>],
    ) -> Option<Self> {
        let buffers = entries
            .iter()
            .map(|e| match &e.resource {
                wgpu::BindingResource::Buffer(b) => {
                    Some((e.binding, b.buffer.clone(), b.offset, b.size))
                }
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(BindKey {
            layout: layout.clone(),
            buffers,
        })
    }
}

/// Two generations of bind groups by what they bind; a group found in the older one
/// moves to the newer. (Generic for its tests.)
pub(crate) struct BindGroupCache<K = BindKey, V = wgpu::BindGroup> {
    newer: HashMap<K, V>,
    older: HashMap<K, V>,
    generation: usize,
    /// Groups inserted since the device started: the groups made.
    pub(crate) made: u64,
}

impl<K, V> Default for BindGroupCache<K, V> {
    fn default() -> Self {
        BindGroupCache {
            newer: HashMap::new(),
            older: HashMap::new(),
            generation: GENERATION,
            made: 0,
        }
    }
}

impl<K: Eq + Hash, V: Clone> BindGroupCache<K, V> {
    pub(crate) fn get(&mut self, key: &K) -> Option<V> {
        if let Some(group) = self.newer.get(key) {
            return Some(group.clone());
        }
        let (key, group) = self.older.remove_entry(key)?;
        self.keep(key, group.clone());
        Some(group)
    }

    /// Keeps a group just made.
    pub(crate) fn insert(&mut self, key: K, group: V) {
        self.made += 1;
        self.keep(key, group);
    }

    fn keep(&mut self, key: K, group: V) {
        if self.newer.len() >= self.generation {
            self.older = std::mem::take(&mut self.newer);
        }
        self.newer.insert(key, group);
    }

    pub(crate) fn clear(&mut self) {
        self.newer.clear();
        self.older.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.newer.len() + self.older.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_in_use_stay_and_the_rest_go_after_two_generations() {
        let mut cache = BindGroupCache {
            generation: 2,
            ..BindGroupCache::default()
        };
        cache.insert(1, "one");
        cache.insert(2, "two");
        // The third starts a generation: 1 and 2 are older, still found.
        cache.insert(3, "three");
        assert_eq!(cache.get(&1), Some("one"));
        // 1 moved to the newer generation, which is now full (3 and 1).
        cache.insert(4, "four");
        assert_eq!(cache.get(&1), Some("one"));
        assert_eq!(cache.get(&3), Some("three"));
        assert_eq!(cache.get(&2), None);
        cache.clear();
        assert_eq!(cache.get(&4), None);
        // Moving between generations is not making.
        assert_eq!(cache.made, 4);
    }
}
