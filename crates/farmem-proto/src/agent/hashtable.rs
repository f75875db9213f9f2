//! Server-side hash-table messages.

use super::*;

/// Arguments of [`op::HT_GET`] and [`op::HT_REMOVE`]: `table:u64 keys:list<bytes>`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HtKeysArgs {
    /// Table id.
    pub table: u64,
    /// The keys.
    pub keys: Vec<Vec<u8>>,
}

impl AgentMessage for HtKeysArgs {
    fn write(&self, w: &mut Writer) {
        w.u64(self.table).count(self.keys.len());
        for k in &self.keys {
            w.byte_string(k);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let table = r.u64()?;
        let n = r.count(4)?;
        let keys = (0..n)
            .map(|_| Ok(r.byte_string()?.to_vec()))
            .collect::<Result<_, AgentDecodeError>>()?;
        Ok(Self { table, keys })
    }
}

/// Arguments of [`op::HT_PUT`]: `table:u64 return_old:u8 entries:list<key:bytes value:bytes>`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HtPutArgs {
    /// Table id (created if absent).
    pub table: u64,
    /// Whether the answer carries the replaced values (otherwise only presence flags).
    pub return_old: bool,
    /// `(key, value)` pairs, applied in order.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl AgentMessage for HtPutArgs {
    fn write(&self, w: &mut Writer) {
        w.u64(self.table)
            .u8(u8::from(self.return_old))
            .count(self.entries.len());
        for (k, v) in &self.entries {
            w.byte_string(k).byte_string(v);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let table = r.u64()?;
        let return_old = match r.u8()? {
            0 => false,
            1 => true,
            tag => {
                return Err(AgentDecodeError::BadTag {
                    what: "return_old",
                    tag,
                });
            }
        };
        let n = r.count(8)?;
        let entries = (0..n)
            .map(|_| Ok((r.byte_string()?.to_vec(), r.byte_string()?.to_vec())))
            .collect::<Result<_, AgentDecodeError>>()?;
        Ok(Self {
            table,
            return_old,
            entries,
        })
    }
}

/// Per-key answer of the batched hash-table operations: `list<found:u8 [value:bytes]>`.
/// The value is present when `found == 1`, except for [`op::HT_PUT`] without `return_old`,
/// which sends `found = 2` (it existed, value omitted) instead.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HtValues {
    /// One entry per key, in request order.
    pub values: Vec<HtValue>,
}

/// One key's answer in [`HtValues`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HtValue {
    /// The key was absent.
    Absent,
    /// The key was present with this value.
    Value(Vec<u8>),
    /// The key was present (value not sent).
    Present,
}

impl AgentMessage for HtValues {
    fn write(&self, w: &mut Writer) {
        w.count(self.values.len());
        for v in &self.values {
            match v {
                HtValue::Absent => w.u8(0),
                HtValue::Value(b) => w.u8(1).byte_string(b),
                HtValue::Present => w.u8(2),
            };
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let n = r.count(1)?;
        let values = (0..n)
            .map(|_| match r.u8()? {
                0 => Ok(HtValue::Absent),
                1 => Ok(HtValue::Value(r.byte_string()?.to_vec())),
                2 => Ok(HtValue::Present),
                tag => Err(AgentDecodeError::BadTag { what: "found", tag }),
            })
            .collect::<Result<_, AgentDecodeError>>()?;
        Ok(Self { values })
    }
}

/// Arguments of [`op::HT_SCAN`]: `table:u64 max:u32 has_after:u8 [after:bytes]`.
/// Returns up to `max` entries whose keys are greater (bytewise) than `after`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HtScanArgs {
    /// Table id.
    pub table: u64,
    /// Page size.
    pub max: u32,
    /// Resume after this key (the last key of the previous page).
    pub after: Option<Vec<u8>>,
}

impl AgentMessage for HtScanArgs {
    fn write(&self, w: &mut Writer) {
        w.u64(self.table).u32(self.max);
        match &self.after {
            None => w.u8(0),
            Some(k) => w.u8(1).byte_string(k),
        };
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let table = r.u64()?;
        let max = r.u32()?;
        let after = match r.u8()? {
            0 => None,
            1 => Some(r.byte_string()?.to_vec()),
            tag => {
                return Err(AgentDecodeError::BadTag {
                    what: "has_after",
                    tag,
                });
            }
        };
        Ok(Self { table, max, after })
    }
}

/// Result of [`op::HT_SCAN`]: `more:u8 entries:list<key:bytes value:bytes>`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct HtScanResult {
    /// Whether entries remain after this page.
    pub more: bool,
    /// The page, ascending by key bytes.
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl AgentMessage for HtScanResult {
    fn write(&self, w: &mut Writer) {
        w.u8(u8::from(self.more)).count(self.entries.len());
        for (k, v) in &self.entries {
            w.byte_string(k).byte_string(v);
        }
    }
    fn read(r: &mut Reader<'_>) -> Result<Self, AgentDecodeError> {
        let more = match r.u8()? {
            0 => false,
            1 => true,
            tag => return Err(AgentDecodeError::BadTag { what: "more", tag }),
        };
        let n = r.count(8)?;
        let entries = (0..n)
            .map(|_| Ok((r.byte_string()?.to_vec(), r.byte_string()?.to_vec())))
            .collect::<Result<_, AgentDecodeError>>()?;
        Ok(Self { more, entries })
    }
}
