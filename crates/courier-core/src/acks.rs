//! Which deliveries of one AMQP channel to acknowledge, and how: one
//! `basic.ack` with `multiple` for the contiguous committed prefix, single
//! acks for committed deliveries behind one still in progress.
//!
//! Owns the rule that keeps "ack only after durable" exact when acks cover
//! many deliveries at once: a multiple ack through tag N settles every
//! delivery of the channel up to N that the broker still holds, so it may
//! only be sent when each of them is committed (or was settled by a frame
//! already sent). It never acks a tag twice, never names a tag the broker
//! no longer holds (RabbitMQ closes the channel on an unknown tag), and
//! must never do I/O: the caller sends what [`AckWindow::take`] returns.

use std::collections::VecDeque;

/// Where one delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// Taken from the broker; its outcome is not committed yet, or it is
    /// being requeued or rejected and that frame is not sent yet.
    InHand,
    /// Its outcome is committed: it may be acked.
    Committed,
}

/// The acks to send for one channel, in this order: the multiple ack, then
/// the single ones (each a tag the multiple ack does not cover).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acks {
    /// Ack every delivery up to and including this tag (`multiple`).
    pub through: Option<u64>,
    /// How many committed deliveries `through` covers (1: send it as a
    /// single ack).
    pub covered: usize,
    /// Committed deliveries behind one still in hand, acked one by one so
    /// that a slow delivery does not keep the rest of the prefetch
    /// occupied.
    pub singles: Vec<u64>,
}

impl Acks {
    /// Frames these acks take.
    pub fn frames(&self) -> usize {
        usize::from(self.through.is_some()) + self.singles.len()
    }
}

/// The deliveries of one channel that the broker still holds unacked, in
/// tag order (the order the broker sent them).
#[derive(Debug, Default)]
pub struct AckWindow {
    held: VecDeque<(u64, Mark)>,
}

impl AckWindow {
    pub fn new() -> Self {
        Self::default()
    }

    /// The broker sent the delivery `tag` (tags grow on a channel).
    pub fn delivered(&mut self, tag: u64) {
        match self.held.back() {
            Some(&(last, _)) if last >= tag => {
                // Out of order cannot happen on one channel; kept correct
                // anyway: sorted, and a tag seen twice is one delivery.
                if let Err(at) = self.held.binary_search_by_key(&tag, |&(t, _)| t) {
                    self.held.insert(at, (tag, Mark::InHand));
                }
            }
            _ => self.held.push_back((tag, Mark::InHand)),
        }
    }

    /// The outcome of `tag` is committed: it may be acked. `false` for a
    /// tag this window does not hold (ignored).
    pub fn committed(&mut self, tag: u64) -> bool {
        match self.position(tag) {
            Some(i) => {
                self.held[i].1 = Mark::Committed;
                true
            }
            None => false,
        }
    }

    /// `tag` was settled by a frame already sent (requeued, rejected, or
    /// acked on its own): the broker no longer holds it.
    pub fn settled(&mut self, tag: u64) {
        if let Some(i) = self.position(tag) {
            self.held.remove(i);
        }
    }

    /// Takes every committed delivery out of the window and says how to ack
    /// them: the longest committed prefix with one multiple ack, the rest
    /// one by one.
    pub fn take(&mut self) -> Acks {
        let mut acks = Acks::default();
        while let Some(&(tag, Mark::Committed)) = self.held.front() {
            self.held.pop_front();
            acks.through = Some(tag);
            acks.covered += 1;
        }
        if self.held.iter().any(|&(_, m)| m == Mark::Committed) {
            self.held.retain(|&(tag, mark)| {
                let committed = mark == Mark::Committed;
                if committed {
                    acks.singles.push(tag);
                }
                !committed
            });
        }
        acks
    }

    /// Deliveries the broker holds unacked on this channel.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    fn position(&self, tag: u64) -> Option<usize> {
        self.held.binary_search_by_key(&tag, |&(t, _)| t).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn the_committed_prefix_is_one_multiple_ack() {
        let mut w = AckWindow::new();
        (1..=5).for_each(|t| w.delivered(t));
        [1, 2, 3].into_iter().for_each(|t| assert!(w.committed(t)));
        let acks = w.take();
        assert_eq!(acks.through, Some(3));
        assert_eq!(acks.covered, 3);
        assert!(acks.singles.is_empty());
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn a_delivery_in_hand_stops_the_prefix_and_the_rest_go_one_by_one() {
        let mut w = AckWindow::new();
        (1..=6).for_each(|t| w.delivered(t));
        [1, 2, 4, 6]
            .into_iter()
            .for_each(|t| assert!(w.committed(t)));
        let acks = w.take();
        assert_eq!(acks.through, Some(2));
        assert_eq!(acks.singles, vec![4, 6]);
        assert_eq!(acks.frames(), 3);
        // 3 and 5 are still held; committing 3 later acks it alone.
        assert!(w.committed(3));
        assert_eq!(w.take().through, Some(3));
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn settled_deliveries_no_longer_stop_the_prefix_and_are_never_named() {
        let mut w = AckWindow::new();
        (1..=4).for_each(|t| w.delivered(t));
        w.settled(2); // requeued: its nack was sent
        [1, 3, 4].into_iter().for_each(|t| assert!(w.committed(t)));
        let acks = w.take();
        assert_eq!(acks.through, Some(4));
        assert_eq!(acks.covered, 3);
        assert!(w.is_empty());
    }

    #[test]
    fn nothing_committed_is_nothing_to_send() {
        let mut w = AckWindow::new();
        w.delivered(7);
        assert!(!w.committed(99), "a tag this window never held");
        assert_eq!(w.take(), Acks::default());
        assert_eq!(w.len(), 1);
    }

    /// What one step of a channel's life does.
    #[derive(Debug, Clone)]
    enum Step {
        Deliver,
        /// Commits the i-th held delivery (modulo what is held).
        Commit(usize),
        /// Requeues or rejects the i-th held delivery, not committed.
        Settle(usize),
        Take,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => Just(Step::Deliver),
            3 => any::<usize>().prop_map(Step::Commit),
            1 => any::<usize>().prop_map(Step::Settle),
            2 => Just(Step::Take),
        ]
    }

    proptest! {
        /// The broker's side, modelled as RabbitMQ keeps it: the set of
        /// tags still unacked. Every ack the window asks for names a tag the
        /// broker holds, and a multiple ack never covers a delivery whose
        /// outcome is not committed; in the end every committed delivery is
        /// acked exactly once.
        #[test]
        fn a_multiple_ack_never_covers_an_uncommitted_delivery(
            steps in proptest::collection::vec(step(), 1..200)
        ) {
            let mut w = AckWindow::new();
            let mut next_tag = 1u64;
            let mut broker: BTreeSet<u64> = BTreeSet::new();
            let mut committed: BTreeSet<u64> = BTreeSet::new();
            let mut acked: BTreeSet<u64> = BTreeSet::new();
            let apply = |acks: Acks,
                             broker: &mut BTreeSet<u64>,
                             committed: &BTreeSet<u64>,
                             acked: &mut BTreeSet<u64>|
             -> Result<(), TestCaseError> {
                if let Some(n) = acks.through {
                    prop_assert!(broker.contains(&n), "multiple ack names {n}, not held");
                    let covered: Vec<u64> = broker.range(..=n).copied().collect();
                    prop_assert_eq!(covered.len(), acks.covered);
                    for t in covered {
                        prop_assert!(committed.contains(&t), "{t} acked uncommitted");
                        broker.remove(&t);
                        prop_assert!(acked.insert(t));
                    }
                }
                for t in acks.singles {
                    prop_assert!(acks.through.is_none_or(|n| t > n));
                    prop_assert!(broker.remove(&t), "single ack of {t}, not held");
                    prop_assert!(committed.contains(&t));
                    prop_assert!(acked.insert(t));
                }
                Ok(())
            };
            for s in steps {
                let in_hand: Vec<u64> = broker
                    .iter()
                    .copied()
                    .filter(|t| !committed.contains(t))
                    .collect();
                match s {
                    Step::Deliver => {
                        w.delivered(next_tag);
                        broker.insert(next_tag);
                        next_tag += 1;
                    }
                    Step::Commit(i) if !in_hand.is_empty() => {
                        let t = in_hand[i % in_hand.len()];
                        committed.insert(t);
                        prop_assert!(w.committed(t));
                    }
                    Step::Settle(i) if !in_hand.is_empty() => {
                        let t = in_hand[i % in_hand.len()];
                        broker.remove(&t);
                        w.settled(t);
                    }
                    Step::Take => apply(w.take(), &mut broker, &committed, &mut acked)?,
                    Step::Commit(_) | Step::Settle(_) => {}
                }
            }
            apply(w.take(), &mut broker, &committed, &mut acked)?;
            prop_assert_eq!(&acked, &committed);
            prop_assert_eq!(w.len(), broker.len());
        }
    }
}
