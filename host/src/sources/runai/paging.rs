//! The paging guard: a pure state machine that says which offset to fetch next.
//!
//! # Rule
//!
//! List endpoints take `offset` and `limit` and answer `{next?, <items>}`, `next` being the
//! offset of the next page. The next offset comes **only from the server**: its `next` when
//! present; when absent, the listing ends — unless the server has sent no `next` on any page
//! of this listing and the page was full (`rows ≥ limit`): then `offset + rows`, rows counted
//! as the server returned them (a server that does not implement `next`). What the caller keeps after filtering never enters this machine, so
//! a filter that drops a whole page cannot stall or rewind the listing.
//!
//! # Invariants
//!
//! - Offsets strictly increase: a `next` not past the current offset ([`PagingError::NotAdvancing`]),
//!   or a `next` after an empty page ([`PagingError::EmptyPageWithNext`]), is an error, never
//!   a loop.
//! - At most `cap` pages: needing one more is [`PagingError::PageCap`], never a silently
//!   truncated list (a truncated list would under-bill).

/// What to do after a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageState {
    /// Fetch the page at this offset.
    Fetch { offset: u64 },
    /// The listing is complete.
    Done,
}

/// Why paging stopped with an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PagingError {
    #[error(
        "failed to page: the server's next offset {next} does not advance past offset {offset}"
    )]
    NotAdvancing { offset: u64, next: u64 },
    #[error("failed to page: the page at offset {offset} is empty but names a next offset {next}")]
    EmptyPageWithNext { offset: u64, next: u64 },
    #[error(
        "failed to page: more than {cap} pages (RUNAI_PAGE_CAP); raise the cap or narrow the listing"
    )]
    PageCap { cap: u32 },
}

/// The guard's state: where the listing is and how many pages it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pager {
    limit: u32,
    cap: u32,
    state: PageState,
    pages: u32,
    server_sends_next: bool,
}

impl Pager {
    /// A listing of pages of `limit` rows, at most `cap` pages, starting at offset 0.
    pub fn new(limit: u32, cap: u32) -> Self {
        Pager {
            limit: limit.max(1),
            cap: cap.max(1),
            state: PageState::Fetch { offset: 0 },
            pages: 0,
            server_sends_next: false,
        }
    }

    pub fn state(&self) -> PageState {
        self.state
    }

    /// Pages stepped over so far.
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// The page requested at the current offset came back with `rows` rows (as the server
    /// sent them) and `next`. Returns the new state; after an error or `Done` the pager stays
    /// there.
    pub fn step(&mut self, rows: usize, next: Option<u64>) -> Result<PageState, PagingError> {
        let PageState::Fetch { offset } = self.state else {
            return Ok(PageState::Done);
        };
        self.pages += 1;
        self.server_sends_next |= next.is_some();
        let target = match next {
            Some(next) if rows == 0 => {
                self.state = PageState::Done;
                return Err(PagingError::EmptyPageWithNext { offset, next });
            }
            Some(next) if next <= offset => {
                self.state = PageState::Done;
                return Err(PagingError::NotAdvancing { offset, next });
            }
            Some(next) => Some(next),
            None if !self.server_sends_next && rows as u64 >= u64::from(self.limit) => {
                Some(offset + rows as u64)
            }
            None => None,
        };
        self.state = match target {
            None => PageState::Done,
            Some(_) if self.pages >= self.cap => {
                self.state = PageState::Done;
                return Err(PagingError::PageCap { cap: self.cap });
            }
            Some(offset) => PageState::Fetch { offset },
        };
        Ok(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_servers_next() {
        let mut p = Pager::new(2, 10);
        assert_eq!(p.state(), PageState::Fetch { offset: 0 });
        assert_eq!(p.step(2, Some(2)), Ok(PageState::Fetch { offset: 2 }));
        assert_eq!(p.step(2, Some(4)), Ok(PageState::Fetch { offset: 4 }));
        assert_eq!(p.step(1, None), Ok(PageState::Done));
        assert_eq!(p.pages(), 3);
        // Done stays done.
        assert_eq!(p.step(5, Some(100)), Ok(PageState::Done));
    }

    #[test]
    fn without_next_a_full_page_advances_by_the_servers_rows() {
        let mut p = Pager::new(3, 10);
        assert_eq!(p.step(3, None), Ok(PageState::Fetch { offset: 3 }));
        assert_eq!(p.step(3, None), Ok(PageState::Fetch { offset: 6 }));
        assert_eq!(p.step(0, None), Ok(PageState::Done));
    }

    #[test]
    fn once_the_server_sent_next_its_absence_ends_the_listing() {
        let mut p = Pager::new(2, 10);
        assert_eq!(p.step(2, Some(2)), Ok(PageState::Fetch { offset: 2 }));
        assert_eq!(p.step(2, None), Ok(PageState::Done));
    }

    #[test]
    fn next_may_skip_ahead_of_the_rows_returned() {
        // A server filtering on its side may return fewer rows than the offsets it covered.
        let mut p = Pager::new(10, 10);
        assert_eq!(p.step(3, Some(10)), Ok(PageState::Fetch { offset: 10 }));
    }

    #[test]
    fn a_page_that_does_not_advance_is_an_error() {
        let mut p = Pager::new(2, 10);
        assert_eq!(p.step(2, Some(2)), Ok(PageState::Fetch { offset: 2 }));
        assert_eq!(
            p.step(2, Some(2)),
            Err(PagingError::NotAdvancing { offset: 2, next: 2 })
        );
        assert_eq!(p.state(), PageState::Done);

        let mut p = Pager::new(2, 10);
        p.step(2, Some(2)).expect("advances");
        assert_eq!(
            p.step(2, Some(0)),
            Err(PagingError::NotAdvancing { offset: 2, next: 0 })
        );

        let mut p = Pager::new(2, 10);
        assert_eq!(
            p.step(0, Some(2)),
            Err(PagingError::EmptyPageWithNext { offset: 0, next: 2 })
        );
    }

    #[test]
    fn the_page_cap_is_an_error_not_a_truncation() {
        let mut p = Pager::new(1, 3);
        assert!(p.step(1, Some(1)).is_ok());
        assert!(p.step(1, Some(2)).is_ok());
        assert_eq!(p.step(1, Some(3)), Err(PagingError::PageCap { cap: 3 }));
        // The last allowed page may end the listing.
        let mut p = Pager::new(1, 2);
        assert!(p.step(1, Some(1)).is_ok());
        assert_eq!(p.step(0, None), Ok(PageState::Done));
    }

    #[test]
    fn any_input_sequence_terminates_within_the_cap() {
        // Adversarial server: every answer drawn from a small set; the pager must stop.
        let answers = [
            (0, None),
            (2, Some(0)),
            (2, Some(1)),
            (2, None),
            (1, Some(5)),
            (0, Some(3)),
        ];
        for seed in 0..200u64 {
            let mut p = Pager::new(2, 20);
            let mut x = seed;
            let mut steps = 0;
            while let PageState::Fetch { .. } = p.state() {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let (rows, next) = answers[(x >> 33) as usize % answers.len()];
                let _ = p.step(rows, next);
                steps += 1;
                assert!(steps <= 20, "seed {seed}");
            }
        }
    }
}
