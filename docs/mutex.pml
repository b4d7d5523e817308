/* The wake-up protocol of filemap's robust mutex (docs/mutex.md; the code is
 * crates/filemap/src/sync/algo.rs: MutexState, MutexWait, wait_any), modelled in Promela.
 *
 * NPROC processes each lock and unlock the mutex ITER times. A killer SIGKILLs up to
 * MAXKILL of them, each at any point between two of its steps (asleep included), and a
 * thread that owns the mutex may also exit instead of unlocking it (its thread-local
 * destructor abandons the mutex; the process lives on).
 *
 * A death is modelled as the kernel handles it: it walks the dead process's robust list,
 * the lock word first and then every watch word, one step at a time while the others run
 * on, and wakes ONE sleeper on each word that named the dead process. Futexes are
 * modelled adversarially: a killed process stays in every wait queue it was in, forever,
 * so any wake-up may be absorbed by a dead sleeper.
 *
 * Checked by `spin -a mutex.pml; gcc -DSAFETY -DCOLLAPSE pan.c; ./pan -E -m500000`:
 *  - mutual exclusion among the living (`cs`);
 *  - at quiescence (no process can move: `timeout`), every process that was not killed
 *    has finished all its iterations: no living waiter is ever left asleep on a free or
 *    abandoned mutex, whoever dies when. (-E: the killed processes stop anywhere, which
 *    is expected, so spin's own end-state check is replaced by this one.)
 *
 * Left out: processes without a slot (they re-check every 50 ms), foreign writers of the
 * shared words, and spurious wake-ups (which only help). */

#define NPROC 3
#define ITER 1
#define MAXKILL 2

/* The lock word: owner (0 free, else the process id 1..NPROC), WAITERS, OWNER_DIED. */
byte m_owner = 0;
bit m_waiters = 0;
bit m_died = 0;

/* Each process's watch word (its slot): the owner it waits for, WAITERS, OWNER_DIED. */
byte d_owner[NPROC + 1];
bit d_waiters[NPROC + 1];
bit d_died[NPROC + 1];

/* Futex queues: asleep[p] while p sleeps; on_m[p]/on_d[p]: the words it sleeps on. */
bit asleep[NPROC + 1];
bit on_m[NPROC + 1];
bit on_d[NPROC + 1];

bit dead[NPROC + 1];
bit finished[NPROC + 1];
bit in_cs[NPROC + 1];
byte cs = 0;

/* Wake one sleeper on the lock word, any of them, dead or alive (it may absorb it). */
inline wake_one_m() {
    if
    :: asleep[1] && on_m[1] -> asleep[1] = 0; on_m[1] = 0; on_d[1] = 0
    :: asleep[2] && on_m[2] -> asleep[2] = 0; on_m[2] = 0; on_d[2] = 0
    :: asleep[3] && on_m[3] -> asleep[3] = 0; on_m[3] = 0; on_d[3] = 0
    :: else -> skip
    fi
}

/* Wake every sleeper on the lock word (filemap's unlock and thread-exit abandonment). */
inline wake_all_m() {
    i = 1;
    do
    :: i <= NPROC ->
        if
        :: asleep[i] && on_m[i] -> asleep[i] = 0; on_m[i] = 0; on_d[i] = 0
        :: else -> skip
        fi;
        i++
    :: else -> i = 0; break
    od
}

/* Wake one sleeper on process q's watch word: only q's threads sleep there. */
inline wake_one_d(q) {
    if
    :: asleep[q] && on_d[q] -> asleep[q] = 0; on_m[q] = 0; on_d[q] = 0
    :: else -> skip
    fi
}

/* One step of a process: nothing happens once it was killed. */
#define STEP(s) atomic { !dead[me] -> s }

proctype P(byte me) {
    byte n = 0;
    byte v_owner;
    bit v_waiters, v_died, w;
    byte i;
loop:
    if
    :: n == ITER -> goto done
    :: else -> skip
    fi;
try:
    /* try_lock: a free word is taken with WAITERS kept and OWNER_DIED dropped (and
     * reported as abandoned). */
    STEP(
        if
        :: m_owner == 0 ->
            m_owner = me; m_died = 0;
            goto locked
        :: else -> v_owner = m_owner; v_waiters = m_waiters; v_died = m_died
        fi
    );
    /* prepare_sleep: sleep only on an owned word with WAITERS set... */
    STEP(
        if
        :: m_owner == 0 -> goto try
        :: m_owner != 0 && m_waiters -> v_owner = m_owner; v_waiters = 1; v_died = m_died
        :: m_owner != 0 && !m_waiters ->
            m_waiters = 1; v_owner = m_owner; v_waiters = 1; v_died = m_died
        fi
    );
    /* ...and watch its owner (a SeqCst store). */
    STEP(d_owner[me] = v_owner; d_waiters[me] = 1; d_died[me] = 0);
    /* wait_any looks once more before sleeping. */
    STEP(
        if
        :: m_owner == 0 -> m_owner = me; m_died = 0; goto locked
        :: else -> skip
        fi
    );
    /* futex_waitv on [lock word == v, watch word == (v.owner, WAITERS)]: queued on both
     * and compared in one step, as the kernel does under its bucket locks. */
    STEP(
        if
        :: m_owner == v_owner && m_waiters == v_waiters && m_died == v_died &&
           d_owner[me] == v_owner && d_waiters[me] && !d_died[me] ->
            asleep[me] = 1; on_m[me] = 1; on_d[me] = 1
        :: else -> skip
        fi
    );
    /* Asleep until woken; killed asleep, it stays queued, absorbing wake-ups. */
    (asleep[me] == 0);
    goto try;
locked:
    STEP(in_cs[me] = 1; cs++; assert(cs == 1));
    STEP(in_cs[me] = 0; cs--);
    if
    :: true ->
        /* unlock: free the word, then wake everyone if it said WAITERS. A kill between
         * the two steps leaves the wake-up to the kernel's walk of the watch words. */
        STEP(w = m_waiters; m_owner = 0; m_waiters = 0; m_died = 0);
        if
        :: w -> STEP(wake_all_m())
        :: else -> skip
        fi
    :: true ->
        /* The owning thread exits: its thread-local destructor abandons the mutex. */
        STEP(w = m_waiters; m_owner = 0; m_died = 1);
        if
        :: w -> STEP(wake_all_m())
        :: else -> skip
        fi
    fi;
    w = 0;
    n++;
    goto loop;
done:
    STEP(finished[me] = 1)
}

/* SIGKILLs up to MAXKILL processes, each at any moment, then walks each dead process's
 * robust list as the kernel does: the lock word first, then the watch words. */
proctype Killer() {
    byte kills = 0, v, j, i;
    do
    :: kills < MAXKILL ->
        atomic {
            if
            :: !dead[1] && !finished[1] -> v = 1
            :: !dead[2] && !finished[2] -> v = 2
            :: !dead[3] && !finished[3] -> v = 3
            fi;
            dead[v] = 1;
            kills++;
            if
            :: in_cs[v] -> in_cs[v] = 0; cs--
            :: else -> skip
            fi
        };
        atomic {
            if
            :: m_owner == v ->
                m_owner = 0; m_died = 1;
                if
                :: m_waiters -> wake_one_m()
                :: else -> skip
                fi
            :: else -> skip
            fi
        };
        j = 1;
        do
        :: j <= NPROC ->
            atomic {
                if
                :: d_owner[j] == v ->
                    d_owner[j] = 0; d_died[j] = 1;
                    if
                    :: d_waiters[j] -> wake_one_d(j)
                    :: else -> skip
                    fi
                :: else -> skip
                fi
            };
            j++
        :: else -> j = 0; break
        od;
        v = 0
    :: break
    od
}

/* When nothing can move any more, everybody who is alive has finished. */
proctype Monitor() {
    timeout ->
        assert((dead[1] || finished[1]) && (dead[2] || finished[2]) && (dead[3] || finished[3]))
}

init {
    atomic {
        run P(1);
        run P(2);
        run P(3);
        run Killer();
        run Monitor()
    }
}
