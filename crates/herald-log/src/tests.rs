//! Unit tests of PartitionLog.
