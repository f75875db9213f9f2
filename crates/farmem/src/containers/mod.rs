//! Remoteable containers: far vectors, hash maps, lists, queues and stacks.
