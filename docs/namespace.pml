/* The namespace protocol that filemap implements on Linux (crates/filemap/src/sys/linux/
 * object.rs and lock.rs), modelled in Promela: one name, NPROC processes doing
 * open_or_create / close / crash in any interleaving. .ci/run checks it with spin.
 *
 * There is no namespace lock (issue 9): every lock is an OFD record lock on the object
 * file itself, so that another user can block no more than the objects they may open.
 *   - holders' range, read lock:  every holder keeps one, each on its own byte of the
 *                          range (2^40 + pid * 65536 + slot) (`h`, `rd`). The model does
 *                          not tell the bytes apart: a read lock anywhere in the range is
 *                          a holder, and "others?" asks about the whole range;
 *   - holders' range, write lock: a remover, converted from its read lock in one step,
 *                          which succeeds only if nobody else locks any of the range
 *                          (`wr0`). Converting an OFD lock is atomic (flock's is not);
 *   - unlink byte (2^40 - 1, right before the range), write lock: whoever unlinks the
 *                          name holds it while it checks that the name is still this
 *                          inode and unlinks it (`ul`); `rm` takes it too (not modelled).
 * A write lock needs a writable descriptor; a holder that opened the object read-only
 * (`writable[p]` false) cannot remove it, and leaves it stale for the next opener or gc.
 * Holders are handles only. A view maps a second open file description of the object,
 * which takes no lock, so views take no part in the protocol: as on Windows, the name
 * goes with the last handle while views may still be mapped (issue 10).
 *
 * How the model maps to the code:
 *   - "build tmp"       openat(O_TMPFILE), fallocate, record, read lock in the holders' range
 *   - "publish"         linkat(/proc/self/fd/N, name), which fails with EEXIST while the
 *                       name exists
 *   - "open E"          openat(name): the inode the name points to now
 *   - "lock E"          read lock on our holder's byte, non-blocking (fails while a remover holds it)
 *   - "check name"      fstat(E) shows its link: filemap never renames an object file and
 *                       refuses one with two links, so E still linked means the name is E
 *   - "others?"         F_OFD_GETLK for a write lock on the holders' range: is any
 *                       other lock there?
 *   - "remove"          one write lock on the unlink byte and the holders' range
 *                       (F_OFD_SETLK from 2^40 - 1 to the end), then unlink the name if
 *                       it is still E
 *   - crash             the kernel drops every lock of the process's descriptors
 *
 * Checked: every handle refers to the object the name points to, all handles refer to the
 * same object, and a handle implies its read lock. With -DCLEAN (no crashes; read-only
 * holders aside), also: once no process is inside an open or a close, a name that nobody
 * holds is gone. The second property is also checked on
 * real processes, with SIGKILLs, by the churn tests in crates/filemap/tests/multiprocess.rs.
 *
 * Run: spin -a namespace.pml && gcc -O2 -DSAFETY -DCOLLAPSE -o pan pan.c && ./pan -m1000000
 * and, for the end-state property (no crashes), the same with `spin -DCLEAN -a`.
 */
#define NPROC 3
#ifdef CLEAN
#define CAN_CRASH false        /* no process crashes: the end-state property is checked */
#define BUSY(p, v) inop[p] = v  /* only the end-state check asks who is mid-operation */
#else
#define CAN_CRASH true
#define BUSY(p, v) skip
#endif
#define MAXI 4
#define NONE 255

byte P = NONE;                 /* the inode the name points to */
bool rd[MAXI * NPROC];         /* rd[i*NPROC+p]: p holds a read lock in i's holders' range */
byte wr0[MAXI] = NONE;         /* process holding the write lock on i's holders' range */
byte ul[MAXI] = NONE;          /* process holding the write lock on i's unlink byte */
byte h[NPROC] = NONE;          /* the inode process p holds a handle on, or NONE */
bool writable[NPROC];          /* whether p's descriptors are read-write */
byte next_inode = 0;
bool inop[NPROC];              /* p is inside an open_or_create or a close */

inline others_hold(i, p, r) {  /* r = some process other than p locks i's holders' range */
  r = false;
  byte q = 0;
  do
  :: q < NPROC -> if :: q != p && rd[i*NPROC+q] -> r = true :: else -> skip fi; q++
  :: q >= NPROC -> break
  od;
  if :: wr0[i] != NONE && wr0[i] != p -> r = true :: else -> skip fi
}

inline crash(p) {
  atomic {
    CAN_CRASH;
    byte j = 0;
    do
    :: j < MAXI ->
       rd[j*NPROC+p] = false;
       if :: wr0[j] == p -> wr0[j] = NONE :: else -> skip fi;
       if :: ul[j] == p -> ul[j] = NONE :: else -> skip fi;
       j++
    :: j >= MAXI -> break
    od;
    h[p] = NONE
  }
}

/* Remove inode e (p holds its read lock): in one fcntl, convert to the write lock on the
 * holders' range and take the unlink byte right before it; unlink the name if it is still
 * e, let go of e. ok = whether p got the locks. */
inline remove(p, e, ok) {
  atomic {
    others_hold(e, p, busy);
    if
    :: writable[p] && !busy && ul[e] == NONE ->
       rd[e*NPROC+p] = false; wr0[e] = p; ul[e] = p; ok = true
    :: else -> ok = false
    fi
  };
  if
  :: ok ->
     if :: crash(p); goto end_idle :: skip fi;
     atomic { if :: P == e -> P = NONE :: else -> skip fi };
     if :: crash(p); goto end_idle :: skip fi;
     atomic { ul[e] = NONE; wr0[e] = NONE }
  :: else -> skip
  fi
}

proctype Proc(byte p) {
  byte t, e; bool busy, ok;

end_idle:
  do
  :: atomic { h[p] == NONE && next_inode < MAXI ->   /* open_or_create: build tmp */
       t = next_inode; next_inode++; rd[t*NPROC+p] = true; BUSY(p, true) };
     if :: crash(p); goto end_idle :: skip fi;
retry:
     atomic {
       if
       :: P == NONE -> P = t; h[p] = t; BUSY(p, false); goto end_idle   /* publish */
       :: else -> e = P                                      /* open E */
       fi
     };
     if :: crash(p); goto end_idle :: skip fi;
     atomic {                                                /* lock E */
       if
       :: wr0[e] == NONE -> rd[e*NPROC+p] = true
       :: else -> goto retry
       fi
     };
     if :: crash(p); goto end_idle :: skip fi;
     atomic {                                                /* check name */
       if
       :: P != e -> rd[e*NPROC+p] = false; goto retry
       :: else -> skip
       fi
     };
     if :: crash(p); goto end_idle :: skip fi;
     atomic {
       others_hold(e, p, busy);
       if
       :: busy -> h[p] = e; rd[t*NPROC+p] = false; BUSY(p, false); goto end_idle
                                                                   /* live: opened */
       :: else -> skip                                             /* stale */
       fi
     };
     if :: crash(p); goto end_idle :: skip fi;
     remove(p, e, ok);
     atomic { rd[e*NPROC+p] = false };                       /* let go of e */
     if
     :: ok || writable[p] -> goto retry                      /* look again */
     :: else -> atomic { rd[t*NPROC+p] = false; BUSY(p, false) }  /* a stale object that we
                                                               * may not remove: give up */
     fi
  :: h[p] != NONE ->                                         /* close */
     atomic { e = h[p]; h[p] = NONE; BUSY(p, true) };
     remove(p, e, ok);
     atomic { rd[e*NPROC+p] = false };                       /* F_UNLCK, not close(): a child
                                                               * that another thread spawns
                                                               * shares the descriptor */
     if
     :: !ok -> if :: crash(p); goto end_idle :: skip fi;
               remove(p, e, ok)                               /* once more, holding nothing:
                                                               * two closing at once must not
                                                               * both leave it stale */
     :: else -> skip
     fi;
     BUSY(p, false)
  :: h[p] != NONE && CAN_CRASH -> crash(p)
  od
}

/* invariants, checked in every state */
active proctype Monitor() {
  byte a, b;
end_mon:
  do
  :: atomic {
       a = 0;
       do
       :: a < NPROC ->
          if
          :: h[a] != NONE ->
             assert(P == h[a]);                      /* the name points at every held object */
             assert(rd[h[a]*NPROC+a] || wr0[h[a]] == a);   /* a handle implies a lock */
             b = 0;
             do
             :: b < NPROC -> assert(h[b] == NONE || h[b] == h[a]); b++
             :: b >= NPROC -> break
             od
          :: else -> skip
          fi; a++
       :: a >= NPROC -> break
       od;
#ifdef CLEAN
       /* Once every process has finished what it was doing, without a crash and with
        * read-write descriptors, a name that nobody holds is gone: no stale object is
        * left behind (two last holders closing at once both found the other and left
        * it, before the second try in `close`). */
       if
       :: writable[0] && writable[1] && !inop[0] && !inop[1] && !inop[2] &&
          P != NONE ->
          assert(h[0] == P || h[1] == P || h[2] == P)
       :: else -> skip
       fi
#endif
     }
  od
}

init {
  atomic {
    byte i = 0;
    do :: i < MAXI -> wr0[i] = NONE; ul[i] = NONE; i++ :: i >= MAXI -> break od;
    h[0] = NONE; h[1] = NONE; h[2] = NONE;
    if :: writable[0] = true :: writable[0] = false fi;
    if :: writable[1] = true :: writable[1] = false fi;
    writable[2] = true;
    run Proc(0); run Proc(1); run Proc(2)
  }
}
