//! Token bytes to text: whole UTF-8 characters only, cut at the first stop string.

/// Turns token bytes into text: holds back incomplete UTF-8 sequences and anything that may be
/// the start of a stop string, and cuts the text at a stop string.
pub struct TextOut {
    pending: Vec<u8>,
    held: String,
    stop: Vec<String>,
}

impl TextOut {
    pub fn new(stop: Vec<String>) -> Self {
        Self {
            pending: Vec::new(),
            held: String::new(),
            stop,
        }
    }

    /// Returns the text that is safe to emit, and whether a stop string was reached.
    pub fn push(&mut self, bytes: &[u8]) -> (String, bool) {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            // Not UTF-8 at all: pass it on replaced rather than stall.
            Err(_) => self.pending.len(),
        };
        let decoded: Vec<u8> = self.pending.drain(..valid).collect();
        self.held.push_str(&String::from_utf8_lossy(&decoded));
        if let Some(at) = self
            .stop
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            let out = self.held[..at].to_string();
            self.held.clear();
            return (out, true);
        }
        let keep = self.partial_stop_len();
        let cut = self.held.len() - keep;
        let out = self.held[..cut].to_string();
        self.held.drain(..cut);
        (out, false)
    }

    /// Length of the longest suffix of the held text that begins some stop string.
    fn partial_stop_len(&self) -> usize {
        let mut best = 0;
        for stop in &self.stop {
            for (i, _) in stop.char_indices().skip(1) {
                if self.held.ends_with(&stop[..i]) {
                    best = best.max(i);
                }
            }
        }
        best
    }

    pub fn finish(&mut self) -> String {
        let mut rest = std::mem::take(&mut self.held);
        rest.push_str(&String::from_utf8_lossy(&std::mem::take(&mut self.pending)));
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_out_joins_split_utf8_and_cuts_at_stop() {
        let stop = vec!["END".to_string()];
        let mut out = TextOut::new(stop.clone());
        let e_acute = "é".as_bytes();
        assert_eq!(out.push(&e_acute[..1]), (String::new(), false));
        assert_eq!(out.push(&e_acute[1..]), ("é".to_string(), false));
        assert_eq!(
            out.push(b" fin E"),
            (" fin ".to_string(), false),
            "a possible stop start is held"
        );
        assert_eq!(out.push(b"N"), (String::new(), false));
        assert_eq!(out.push(b"D and more"), (String::new(), true));
        let mut out = TextOut::new(stop.clone());
        assert_eq!(out.push(b"E"), (String::new(), false));
        assert_eq!(
            out.push(b"x"),
            ("Ex".to_string(), false),
            "released once it cannot be a stop"
        );
        assert_eq!(out.push(b"E"), (String::new(), false));
        assert_eq!(out.finish(), "E");
    }
}
