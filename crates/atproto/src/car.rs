//! CAR v1 files (a repo from `getRepo`, the blocks of a firehose commit), read with `iroh-car`.
//! Every block is checked against its CID (sha2-256), so a block can be trusted to be what the
//! commit and the MST point at.

use std::collections::HashMap;

use cid::Cid;
use sha2::Digest;

use crate::limits::{MAX_BLOCKS, MAX_CAR_BYTES};

/// The multihash code of sha2-256, the only hash the AT Protocol uses for blocks.
const SHA2_256: u64 = 0x12;

/// Why bytes are not a usable CAR (or a usable part of one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("not a CAR file: {0}")]
    Car(String),
    #[error("the CAR is larger than {MAX_CAR_BYTES} bytes")]
    TooLarge,
    #[error("the CAR holds more than {MAX_BLOCKS} blocks")]
    TooManyBlocks,
    #[error("block {0} does not match its CID")]
    BadBlock(String),
    #[error("block {0} is missing")]
    Missing(String),
    #[error("malformed {what}: {message}")]
    Malformed { what: &'static str, message: String },
}

/// A decoded CAR: its roots and its blocks by CID.
#[derive(Debug, Default)]
pub struct Car {
    pub roots: Vec<Cid>,
    pub blocks: HashMap<Cid, Vec<u8>>,
}

impl Car {
    /// Reads a whole CAR from memory, checking every block's hash.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_CAR_BYTES {
            return Err(DecodeError::TooLarge);
        }
        futures::executor::block_on(async {
            let mut reader = iroh_car::CarReader::new(bytes).await.map_err(|e| DecodeError::Car(e.to_string()))?;
            let roots = reader.header().roots().to_vec();
            let mut blocks = HashMap::new();
            while let Some((cid, data)) = reader.next_block().await.map_err(|e| DecodeError::Car(e.to_string()))? {
                if blocks.len() >= MAX_BLOCKS {
                    return Err(DecodeError::TooManyBlocks);
                }
                check_block(&cid, &data)?;
                blocks.insert(cid, data);
            }
            Ok(Self { roots, blocks })
        })
    }

    /// The block `cid` points at.
    pub fn block(&self, cid: &Cid) -> Result<&[u8], DecodeError> {
        self.blocks.get(cid).map(Vec::as_slice).ok_or_else(|| DecodeError::Missing(cid.to_string()))
    }
}

/// Checks that `data` hashes to `cid`.
fn check_block(cid: &Cid, data: &[u8]) -> Result<(), DecodeError> {
    let hash = cid.hash();
    let ok = hash.code() == SHA2_256 && hash.digest() == sha2::Sha256::digest(data).as_slice();
    if ok {
        Ok(())
    } else {
        Err(DecodeError::BadBlock(cid.to_string()))
    }
}
