//! Tests of the CLOCK policy: second chances, credits, sampling, cleaning and drop-behind.

use super::*;

fn slot(page: usize, referenced: bool) -> Slot {
    Slot::new(page, referenced, false, Twin::None)
}

#[test]
fn referenced_pages_get_a_second_chance() {
    let mut c = Clock::new(4);
    for p in 0..4 {
        assert!(c.insert(slot(p, p % 2 == 0)));
    }
    assert!(!c.insert(slot(9, false)), "full");
    let mut chances = vec![];
    let v = c.select_victims(2, &mut vec![], 0, |s| chances.push(s.page));
    assert_eq!(v, vec![1, 3]);
    assert_eq!(chances, vec![0, 2]);
    c.remove(1);
    c.remove(3);
    assert_eq!(c.len(), 2);
    // Bits are now clear: the next selection takes the formerly referenced pages.
    assert_eq!(c.select_victims(2, &mut vec![], 0, |_| {}), vec![0, 2]);
    assert!(c.insert(slot(9, false)));
    assert!(c.contains(9) && !c.contains(1));
}

#[test]
fn hot_pages_outlive_cold_ones_and_evicting_pages_are_skipped() {
    let mut c = Clock::new(4);
    for p in 0..4 {
        c.insert(slot(p, false));
    }
    c.get_mut(0).unwrap().hot = 2;
    c.get_mut(1).unwrap().evicting = true;
    assert_eq!(c.select_victims(2, &mut vec![], 0, |_| {}), vec![2, 3]);
    c.remove(2);
    c.remove(3);
    // Two evictions later (a window is one eviction here) page 0's two credits are spent and
    // it goes; page 1 is never chosen while evicting.
    assert_eq!(c.select_victims(2, &mut vec![], 0, |_| {}), vec![0]);
    assert_eq!(c.get_mut(0).unwrap().hot, 0);
}

#[test]
fn grants_double_while_a_page_proves_hot() {
    let mut s = slot(0, false);
    s.proved_hot(0, 0);
    assert_eq!((s.grant, s.hot), (HOT_CREDITS, HOT_CREDITS));
    s.proved_hot(0, 0);
    assert_eq!(s.hot, 2 * HOT_CREDITS);
    // A refault carries the grant the page had when it was evicted.
    let mut back = slot(0, false);
    back.proved_hot(s.grant, 0);
    assert_eq!(back.hot, 4 * HOT_CREDITS);
    for _ in 0..8 {
        back.proved_hot(0, 0);
    }
    assert_eq!(back.hot, MAX_CREDITS);
}

#[test]
fn credits_last_windows_of_evictions_however_fast_the_hand_turns() {
    let mut c = Clock::new(8);
    c.sample_window = 4;
    // Six hot pages (3 credits: 12 evictions) and two cold slots that keep turning over.
    for p in 0..6 {
        let mut s = slot(p, false);
        s.proved_hot(0, 0);
        assert!(c.insert(s));
    }
    c.insert(slot(6, false));
    c.insert(slot(7, false));
    let mut next = 8;
    for _ in 0..11 {
        let v = c.select_victims(1, &mut vec![], 0, |_| {});
        assert_eq!(v.len(), 1);
        assert!(
            v[0] >= 6,
            "hot page {} evicted after {} evictions",
            v[0],
            c.now()
        );
        c.remove(v[0]);
        assert!(c.insert(slot(next, false)));
        next += 1;
    }
    // Twelve windows' worth later the credits are spent: the hot pages are sampled.
    let mut sample = vec![];
    for _ in 0..3 {
        for p in c.select_victims(1, &mut sample, 8, |_| {}) {
            c.remove(p);
            c.insert(slot(next, false));
            next += 1;
        }
    }
    sample.sort_unstable();
    assert_eq!(sample, vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn a_resident_set_of_hot_pages_still_yields_victims() {
    let mut c = Clock::new(4);
    c.sample_window = 2;
    for p in 0..4 {
        let mut s = slot(p, false);
        s.proved_hot(0, 0);
        c.insert(s);
    }
    // No eviction ever passes the time: idle revolutions do.
    assert_eq!(c.select_victims(2, &mut vec![], 0, |_| {}).len(), 2);
}

#[test]
fn sampled_pages_stay_for_their_window() {
    let mut c = Clock::new(16);
    c.sample_window = 2;
    for p in 0..3 {
        c.insert(slot(p, false));
    }
    c.get_mut(0).unwrap().staged = Some((0, SAMPLE_TAG));
    // Page 0 is sampled at time 0: the first two victims are other pages.
    assert_eq!(c.select_victims(2, &mut vec![], 0, |_| {}), vec![1, 2]);
    c.remove(1);
    c.remove(2);
    assert_eq!(c.select_victims(1, &mut vec![], 0, |_| {}), vec![0]);
    // Evicted untouched: a sample that found the page out of use.
    assert_eq!((c.judged, c.judged_hits), (1, 0));
}

#[test]
fn sample_grants_grow_faster_while_samples_prove_hot() {
    let mut c = Clock::new(8);
    c.insert(slot(0, false));
    c.insert(slot(1, false));
    let grant = |c: &mut Clock| c.get_mut(0).unwrap().grant;
    // Too few outcomes to trust: grants double.
    c.sample_hit(0);
    assert_eq!(grant(&mut c), HOT_CREDITS);
    c.sample_hit(0);
    assert_eq!(grant(&mut c), 2 * HOT_CREDITS);
    for _ in 0..SAMPLE_MIN {
        c.sample_hit(1);
    }
    assert!(c.samples_mostly_hot());
    // Most samples hit: grants grow fourfold, up to the higher cap.
    c.sample_hit(0);
    assert_eq!(grant(&mut c), 8 * HOT_CREDITS);
    for _ in 0..4 {
        c.sample_hit(0);
    }
    assert_eq!(grant(&mut c), MAX_CREDITS_HOT);
    assert_eq!(c.get_mut(0).unwrap().hot, MAX_CREDITS_HOT);
    // Once most samples find their page out of use, grants double again, within the
    // ordinary cap.
    for _ in 0..2 * SAMPLE_MEMORY {
        c.judge(false);
    }
    assert!(!c.samples_mostly_hot());
    c.sample_hit(1);
    assert!(c.get_mut(1).unwrap().grant <= MAX_CREDITS);
}

#[test]
fn cleaner_picks_dirty_pages_not_written_since_its_last_pass() {
    let mut c = Clock::new(8);
    for p in 0..8 {
        c.insert(Slot::new(p, true, p != 0 && p < 4, Twin::Zero));
    }
    // Dirty pages beyond half a revolution ahead of the hand are left alone.
    c.get_mut(6).unwrap().dirty = true;
    // Pages 1-3 are dirty and unprotected (being written): the first pass protects them.
    let mut protected = vec![];
    assert!(
        c.select_clean(8, |s| {
            s.protected = true;
            protected.push(s.page);
        })
        .is_empty()
    );
    assert_eq!(protected, vec![1, 2, 3]);
    // Page 2 is written again (a write-protect fault un-protects it); 3 is being evicted.
    c.get_mut(2).unwrap().protected = false;
    c.get_mut(3).unwrap().evicting = true;
    let mut again = vec![];
    assert_eq!(c.select_clean(8, |s| again.push(s.page)), vec![1]);
    assert_eq!(again, vec![2]);
}

#[test]
fn clean_victims_first_leave_dirty_pages_for_the_cleaner() {
    let mut c = Clock::new(4);
    for p in 0..4 {
        c.insert(Slot::new(p, false, p % 2 == 1, Twin::Zero));
    }
    // One revolution finds the two clean pages only.
    assert_eq!(
        c.select_clean_victims(3, &mut vec![], 0, |_| {}),
        vec![0, 2]
    );
    c.remove(0);
    c.remove(2);
    assert!(c.select_clean_victims(1, &mut vec![], 0, |_| {}).is_empty());
    // The ordinary hand takes dirty pages when it must.
    assert_eq!(c.select_victims(2, &mut vec![], 0, |_| {}), vec![1, 3]);
}

/// A prefetched, clean, unreferenced page.
fn prefetched(page: usize) -> Slot {
    let mut s = slot(page, false);
    s.prefetched = true;
    s
}

#[test]
fn consumed_stream_pages_go_before_dirty_and_other_pages() {
    let mut c = Clock::new(8);
    // The hand starts at a dirty resident tail (pages 0-3), then stream pages 4-7.
    for p in 0..4 {
        c.insert(Slot::new(p, false, true, Twin::Zero));
    }
    for p in 4..8 {
        c.insert(prefetched(p));
    }
    // The stream left 5 and 4 behind (in that order); 6 and 7 are ahead of it.
    c.consumed(5);
    c.consumed(4);
    assert!(c.get_mut(5).unwrap().consumed);
    assert_eq!(c.select_victims(3, &mut vec![], 0, |_| {}), vec![5, 4, 0]);
    // The hand resumes where it was: the queue is empty now.
    assert_eq!(c.select_victims(1, &mut vec![], 0, |_| {}), vec![1]);
    // With a cleaner, consumed clean pages are also the first clean victims.
    c.remove(5);
    c.insert(prefetched(9));
    c.consumed(9);
    assert_eq!(c.select_clean_victims(1, &mut vec![], 0, |_| {}), vec![9]);
}

#[test]
fn only_untouched_prefetched_pages_become_consumed() {
    let mut c = Clock::new(8);
    c.insert(slot(0, false)); // demand-fetched
    let mut hot = prefetched(1);
    hot.proved_hot(0, 0);
    c.insert(hot);
    let mut staged = prefetched(2);
    staged.staged = Some((0, 7));
    c.insert(staged);
    c.insert(prefetched(3));
    for p in 0..5 {
        c.consumed(p);
    }
    let consumed: Vec<usize> = (0..4).filter(|&p| c.get_mut(p).unwrap().consumed).collect();
    assert_eq!(consumed, vec![3]);
    assert_eq!(c.behind.len(), 1);
}

#[test]
fn a_consumed_page_touched_again_keeps_its_protection() {
    let mut c = Clock::new(4);
    for p in 0..4 {
        c.insert(prefetched(p));
    }
    c.consumed(0);
    c.consumed(1);
    // The program faults on page 0 again (a write, or a read after a sample): in use.
    c.get_mut(0).unwrap().touch();
    assert!(!c.get_mut(0).unwrap().consumed);
    // Page 1 goes first; page 0 is passed over by the queue and gets the hand's second
    // chance like any referenced page.
    let mut chances = vec![];
    let v = c.select_victims(3, &mut vec![], 0, |s| chances.push(s.page));
    assert_eq!(v, vec![1, 2, 3]);
    assert_eq!(chances, vec![0]);
    assert!(c.contains(0));
}

#[test]
fn drop_behind_stops_while_its_victims_come_back() {
    let mut c = Clock::new(16);
    c.sample_window = 2;
    let mut next = 0;
    let fill = |c: &mut Clock, next: &mut usize| {
        while c.len() < 16 {
            c.insert(prefetched(*next));
            *next += 1;
        }
    };
    fill(&mut c, &mut next);
    // Many drop-behind victims, and more than one in eight of them came back soon.
    for _ in 0..BEHIND_MIN {
        let p = c.slots.iter().flatten().map(|s| s.page).max().unwrap();
        c.consumed(p);
        let v = c.select_victims(1, &mut vec![], 0, |_| {});
        assert_eq!(v, vec![p]);
        c.remove(p);
        fill(&mut c, &mut next);
    }
    assert!(c.drop_behind_on());
    for _ in 0..BEHIND_MIN / 4 {
        c.behind_refault();
    }
    assert!(!c.drop_behind_on());
    // Consumed pages get no precedence now: the hand picks in its own order.
    let newest = next - 1;
    c.consumed(newest);
    let v = c.select_victims(1, &mut vec![], 0, |_| {});
    assert_ne!(v, vec![newest]);
    // A few budgets' worth of evictions without mistakes later, it is back on.
    for _ in 0..64 {
        for p in c.select_victims(1, &mut vec![], 0, |_| {}) {
            c.remove(p);
        }
        fill(&mut c, &mut next);
    }
    assert!(c.drop_behind_on());
}

#[test]
fn all_referenced_still_yields_victims() {
    let mut c = Clock::new(3);
    for p in 0..3 {
        c.insert(slot(p, true));
    }
    assert_eq!(c.select_victims(3, &mut vec![], 0, |_| {}).len(), 3);
}
