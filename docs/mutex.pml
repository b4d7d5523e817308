/* The wake-up protocol of filemap's robust mutex (docs/mutex.md; the code is
 * crates/filemap/src/sync/algo.rs, MutexState and MutexWait), modelled in Promela.
 *
 * NPROC processes each lock and unlock the mutex ITER times. Any process may die (SIGKILL)
 * at any step, also while asleep, and a thread that owns the mutex may exit instead of
 * unlocking it. What the kernel does at a death is modelled as it happens: it walks the
 * dead process's robust list, lock word first, then every watch word, one step at a time
 * while the others run on, and wakes ONE sleeper on each word that named the dead process.
 *
 * Futexes are modelled adversarially: a dead process stays in every wait queue it was in,
 * so any wake-up may be absorbed by a dead sleeper, forever.
 *
 * Checked (spin -a; pan -m500000; "errors: 0"):
 *  - mutual exclusion among the living (cs);
 *  - no live process ever sleeps on while nothing can wake it: a state where every live
 *    process is blocked before its end is an invalid end state, which spin reports. So
 *    no waiter is left asleep on a free or abandoned mutex, whatever dies when. */

#define NPROC 3
#define ITER 2

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
byte cs = 0;          /* live processes in the critical section */
bit in_cs[NPROC + 1];
byte abandoned_seen = 0;

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
    :: else -> break
    od
}

/* Wake one sleeper on process q's watch word: only q's threads sleep there. */
inline wake_one_d(q) {
    if
    :: asleep[q] && on_d[q] -> asleep[q] = 0; on_m[q] = 0; on_d[q] = 0
    :: else -> skip
    fi
}

/* The kernel's walk of process `me`'s robust list when it dies: the lock word first,
 * then every watch word, each one step. */
inline die() {
    dead[me] = 1;
    if
    :: in_cs[me] -> in_cs[me] = 0; cs--
    :: else -> skip
    fi;
    atomic {
        if
        :: m_owner == me ->
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
            :: d_owner[j] == me ->
                d_owner[j] = 0; d_died[j] = 1;
                if
                :: d_waiters[j] -> wake_one_d(j)
                :: else -> skip
                fi
            :: else -> skip
            fi
        };
        j++
    :: else -> break
    od;
    goto gone
}

/* Any step may be the last: the process dies there instead. */
#define STEP(s) if :: !died_once -> died_once = 1; die() :: true -> s fi

proctype P(byte me) {
    byte n = 0;
    byte v_owner;
    bit v_waiters, v_died, w, died_once = 0;
    byte i, j;
loop:
    if
    :: n == ITER -> goto done
    :: else -> skip
    fi;
try:
    /* try_lock: a free word is taken with WAITERS kept and OWNER_DIED dropped. */
    STEP(atomic {
        if
        :: m_owner == 0 ->
            if
            :: m_died -> abandoned_seen++
            :: else -> skip
            fi;
            m_owner = me; m_died = 0;
            goto locked
        :: else -> v_owner = m_owner; v_waiters = m_waiters; v_died = m_died
        fi
    });
    /* prepare_sleep: make sure the unlock wakes us... */
    STEP(atomic {
        if
        :: m_owner == v_owner && m_waiters == v_waiters && m_died == v_died ->
            m_waiters = 1; v_waiters = 1
        :: else -> goto try
        fi
    });
    /* ...and watch the owner (SeqCst store). */
    STEP(atomic { d_owner[me] = v_owner; d_waiters[me] = 1; d_died[me] = 0 });
    /* wait_any looks once more before sleeping. */
    STEP(atomic {
        if
        :: m_owner == 0 ->
            if
            :: m_died -> abandoned_seen++
            :: else -> skip
            fi;
            m_owner = me; m_died = 0;
            goto locked
        :: else -> skip
        fi
    });
    /* futex_waitv on [lock word == v, watch word == (v.owner, WAITERS)]: queued on both
     * and checked in one step, as the kernel does under its bucket locks. */
    STEP(atomic {
        if
        :: m_owner == v_owner && m_waiters == v_waiters && m_died == v_died &&
           d_owner[me] == v_owner && d_waiters[me] && !d_died[me] ->
            asleep[me] = 1; on_m[me] = 1; on_d[me] = 1
        :: else -> skip
        fi
    });
    /* Asleep until woken; it may die asleep, and then stays queued, absorbing wakes. */
    if
    :: asleep[me] == 0 -> goto try
    :: !died_once -> died_once = 1; die()
    fi;
locked:
    in_cs[me] = 1; cs++;
    assert(cs == 1);
    STEP(in_cs[me] = 0; cs--);
    if
    :: true ->
        /* unlock: free the word, then wake everyone if it said WAITERS. A death between
         * the two steps leaves the wake to the kernel's walk of the watch words. */
        STEP(atomic { w = m_waiters; m_owner = 0; m_waiters = 0; m_died = 0 });
        if
        :: w -> STEP(atomic { wake_all_m() })
        :: else -> skip
        fi
    :: true ->
        /* The owning thread exits: its thread-local destructor abandons the mutex. The
         * process lives on (here: it goes on with the next iteration). */
        STEP(atomic { w = m_waiters; m_owner = 0; m_died = 1 });
        if
        :: w -> STEP(atomic { wake_all_m() })
        :: else -> skip
        fi
    fi;
    n++;
    goto loop;
done:
    skip;
gone:
    skip
}

init {
    atomic {
        run P(1);
        run P(2);
        run P(3)
    }
}
