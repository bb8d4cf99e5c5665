//! Secret masking over a byte stream, correct when a secret is split across reads.

const MASK: &[u8] = b"***";

/// Replaces every occurrence of any secret with `***`. Bytes that could be the start of a
/// secret are held back until the next [`Masker::push`] (or [`Masker::finish`]) decides.
#[derive(Debug, Clone, Default)]
pub struct Masker {
    secrets: Vec<Vec<u8>>,
    first_bytes: Vec<bool>,
    pending: Vec<u8>,
}

impl Masker {
    pub fn new<I, S>(secrets: I) -> Masker
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        let mut secrets: Vec<Vec<u8>> = secrets
            .into_iter()
            .map(|s| s.as_ref().to_vec())
            .filter(|s| !s.is_empty())
            .collect();
        // Longest first, so a secret that contains another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        let mut first_bytes = vec![false; 256];
        for s in &secrets {
            first_bytes[usize::from(s[0])] = true;
        }
        Masker {
            secrets,
            first_bytes,
            pending: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// Masks `data`, returning what can be emitted now.
    pub fn push(&mut self, data: &[u8]) -> Vec<u8> {
        if self.secrets.is_empty() {
            return data.to_vec();
        }
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(data);
        let mut out = Vec::with_capacity(buf.len());
        let mut i = 0;
        'scan: while i < buf.len() {
            if self.first_bytes[usize::from(buf[i])] {
                let rest = &buf[i..];
                for s in &self.secrets {
                    if rest.starts_with(s) {
                        out.extend_from_slice(MASK);
                        i += s.len();
                        continue 'scan;
                    }
                }
                if self
                    .secrets
                    .iter()
                    .any(|s| s.len() > rest.len() && s.starts_with(rest))
                {
                    // Could be a secret cut by the read boundary: decide when more arrives.
                    self.pending = rest.to_vec();
                    return out;
                }
            }
            out.push(buf[i]);
            i += 1;
        }
        out
    }

    /// The held-back tail at the end of the stream (it was not a secret).
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mask_chunks(secrets: &[&str], chunks: &[&[u8]]) -> Vec<u8> {
        let mut m = Masker::new(secrets);
        let mut out = Vec::new();
        for c in chunks {
            out.extend(m.push(c));
        }
        out.extend(m.finish());
        out
    }

    #[test]
    fn masks_whole_and_split_secrets() {
        assert_eq!(mask_chunks(&["hunter2"], &[b"pw=hunter2!"]), b"pw=***!");
        assert_eq!(
            mask_chunks(&["hunter2"], &[b"pw=hun", b"ter2!"]),
            b"pw=***!"
        );
        assert_eq!(
            mask_chunks(&["hunter2"], &[b"h", b"u", b"n", b"t", b"e", b"r", b"2"]),
            b"***"
        );
        assert_eq!(mask_chunks(&["hunter2"], &[b"pw=hunt"]), b"pw=hunt");
        assert_eq!(
            mask_chunks(&["abc", "abcdef"], &[b"xabcdefx abc"]),
            b"x***x ***"
        );
        assert_eq!(mask_chunks(&[], &[b"plain"]), b"plain");
    }

    proptest! {
        #[test]
        fn chunking_never_changes_the_result(
            text in "[a-c]{0,40}",
            secret in "[a-c]{1,4}",
            cuts in proptest::collection::vec(0usize..40, 0..6),
        ) {
            let whole = mask_chunks(&[secret.as_str()], &[text.as_bytes()]);
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|c| *c <= text.len()).collect();
            cuts.sort();
            let mut chunks = Vec::new();
            let mut last = 0;
            for c in cuts { chunks.push(&text.as_bytes()[last..c]); last = c; }
            chunks.push(&text.as_bytes()[last..]);
            prop_assert_eq!(mask_chunks(&[secret.as_str()], &chunks), whole.clone());
            prop_assert!(!String::from_utf8(whole).unwrap().contains(&secret));
        }
    }
}
