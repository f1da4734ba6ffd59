//! Typed frames per protocol, parsed once at the edge.
//!
//! Every parser takes the frames exactly as a socket delivered them and returns either a
//! typed message or a [`ProtocolError`](crate::error::ProtocolError) that says what was
//! expected and what arrived. No parser indexes into peer data or panics.

pub mod mdp;
pub mod ppp;
pub mod pubsub;
pub mod wire;

/// A multipart message: one `Vec<u8>` per frame, as `zmq::Socket::recv_multipart` gives.
pub type Frames = Vec<Vec<u8>>;

/// The position of the empty delimiter that ends a routing envelope
/// `[address...][""][body...]`, if there is one with at least one address frame
/// before it and at least one body frame after it.
pub fn delimiter(frames: &[Vec<u8>]) -> Option<usize> {
    let at = frames.iter().position(|f| f.is_empty())?;
    (at >= 1 && at + 1 < frames.len()).then_some(at)
}

/// Shows at most the first 8 bytes of a frame, for error messages about peer data.
pub(crate) fn preview(frame: &[u8]) -> Vec<u8> {
    frame.iter().take(8).copied().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiter_needs_address_and_body() {
        let f = |v: &[&[u8]]| v.iter().map(|x| x.to_vec()).collect::<Frames>();
        assert_eq!(delimiter(&f(&[b"id", b"", b"body"])), Some(1));
        assert_eq!(delimiter(&f(&[b"a", b"b", b"", b"x", b"y"])), Some(2));
        assert_eq!(delimiter(&f(&[b"id", b"", b""])), Some(1));
        assert_eq!(delimiter(&f(&[b"", b"body"])), None);
        assert_eq!(delimiter(&f(&[b"id", b""])), None);
        assert_eq!(delimiter(&f(&[b"id", b"body"])), None);
        assert_eq!(delimiter(&[]), None);
    }
}
