/* probes._native: the probe hit paths in C (issue 12, the native core).
 *
 * An implementation of the probes core's contract (probes/_core.py,
 * probes/_rethook.py), not a second design: the same sites, the same
 * kprobe_running() flag, the same per-task in-flight lists and instance free
 * lists, the same counters. Python is entered only to call a user's handler;
 * every shape the fast paths below do not handle (a nested hit, a stale
 * instance, a stack pointer outside writable memory, a post_handler, several
 * kretprobes on one frame) goes to the Python code, the reference, exactly as
 * the Python fast paths hand it to the general code. KPE_NATIVE=0 keeps the
 * Python fast paths; make test runs the probe suites on both.
 *
 * Types:
 *   Regs      struct pt_regs for handlers over the live register block (the
 *             base of probes._regs.NativeRegs): reads go to QEMU's env->regs[],
 *             writes are buffered in _dirty and applied by _commit();
 *   Instance  struct kretprobe_instance (the base of KretprobeInstance);
 *   Core      one probe manager's shared state: kprobe_running(), the
 *             registers, the in-flight lists, the trampoline cell, a cache of
 *             the writable stack span last used, and the Python fallbacks;
 *   Hit       the hit path of one site: a kprobe site (pre_handlers, then the
 *             emulated or boosted step) or a site whose only probe is a
 *             kretprobe's (take an instance, entry_handler, hijack the return
 *             address, step). Callable as trap(addr) (the machine's int3
 *             table) and installed as a code hook (hit_code) when optimized.
 *   tramp_code  the code hook of the kretprobe trampoline (user data: Core).
 *
 * Unicorn's functions come as addresses from the loaded library (no headers);
 * the hooks have the C signatures unicorn.h gives them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "structmember.h"
#include "../emu/_native_common.h"
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <stdio.h>

typedef struct uc_struct uc_engine;
typedef int (*uc_reg_rw_t)(uc_engine *uc, int regid, void *value);

enum { R_RSP = 4, R_RIP = 16, NR_FAST = 17, K_EFLAGS = -1 };
enum { STEP_NONE = 0, STEP_NOP = 1, STEP_PUSH = 2, STEP_BOOST = 3, STEP_PY = 4, STEP_POP = 5,
       STEP_JMP = 6, STEP_CALL = 7, STEP_RET = 8 };
#define NOT_FIRING 0x3     /* KPROBE_FLAG_GONE | KPROBE_FLAG_DISABLED */

static PyObject *s_handler, *s_rp_handler, *s_gone, *s_pre_handler, *s_flags,
    *s_entry_handler, *s_prepare, *s_cut_at_hit, *mask64;

/* --- errors ------------------------------------------------------------------------- */
/* Hand the pending exception to fn(exc) (Machine.abort), or fn(exc, culprit)
 * (KprobeManager.handler_failed) when culprit is given. */
static void hand_over(PyObject *fn, PyObject *culprit)
{
    PyObject *exc = take_exception();
    if (exc == NULL)
        return;
    PyObject *r = culprit != NULL ? PyObject_CallFunctionObjArgs(fn, exc, culprit, NULL)
                                  : PyObject_CallOneArg(fn, exc);
    if (r == NULL)
        PyErr_WriteUnraisable(fn);     /* abort itself failed: say so, go on */
    Py_XDECREF(r);
    Py_DECREF(exc);
}

/* === Regs ============================================================================= */
typedef struct {
    PyObject_HEAD
    uint64_t *gpr;           /* the live block: 16 GPRs in encoding order, then RIP */
    uc_engine *uch;
    uc_reg_rw_t reg_read, reg_write;
    int eflags_id;
    unsigned long long rip;  /* _rip: what handlers see as rip */
    PyObject *dirty;         /* _dirty: dict index -> value, or NULL/None */
} Regs;

#define DIRTY(r) ((r)->dirty != NULL && (r)->dirty != Py_None)

static void regs_discard(Regs *r)
{
    Py_CLEAR(r->dirty);
}

static int Regs_init(Regs *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"gpr", "uch", "reg_read", "reg_write", "eflags_id", NULL};
    unsigned long long gpr, uch, rd, wr;
    int eflags_id;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KKKKi", kwlist, &gpr, &uch, &rd, &wr, &eflags_id))
        return -1;
    if (!gpr || !uch || !rd || !wr) {
        PyErr_SetString(PyExc_ValueError, "Regs: null register block, handle or function");
        return -1;
    }
    self->gpr = (uint64_t *)(uintptr_t)gpr;
    self->uch = (uc_engine *)(uintptr_t)uch;
    self->reg_read = (uc_reg_rw_t)(uintptr_t)rd;
    self->reg_write = (uc_reg_rw_t)(uintptr_t)wr;
    self->eflags_id = eflags_id;
    self->rip = 0;
    regs_discard(self);
    return 0;
}

static int valid_index(long index)
{
    if (index == K_EFLAGS || (index >= 0 && index < NR_FAST))
        return 1;
    PyErr_Format(PyExc_IndexError, "no register with index %ld", index);
    return 0;
}

static PyObject *regs_get(Regs *r, long index)
{
    if (DIRTY(r)) {
        PyObject *key = PyLong_FromLong(index);
        if (key == NULL)
            return NULL;
        PyObject *v = PyDict_GetItemWithError(r->dirty, key);
        Py_DECREF(key);
        if (v != NULL)
            return Py_NewRef(v);
        if (PyErr_Occurred())
            return NULL;
    }
    if (index == R_RIP)
        return PyLong_FromUnsignedLongLong(r->rip);
    if (index == K_EFLAGS) {
        uint64_t v = 0;
        r->reg_read(r->uch, r->eflags_id, &v);
        return PyLong_FromUnsignedLongLong(v);
    }
    return PyLong_FromUnsignedLongLong(r->gpr[index]);
}

static int regs_set(Regs *r, long index, PyObject *value)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "registers cannot be deleted");
        return -1;
    }
    PyObject *masked = PyNumber_And(value, mask64);
    if (masked == NULL)
        return -1;
    if (!DIRTY(r)) {
        Py_XSETREF(r->dirty, PyDict_New());
        if (r->dirty == NULL) {
            Py_DECREF(masked);
            return -1;
        }
    }
    PyObject *key = PyLong_FromLong(index);
    int rc = key != NULL ? PyDict_SetItem(r->dirty, key, masked) : -1;
    Py_XDECREF(key);
    Py_DECREF(masked);
    return rc;
}

/* Apply buffered writes other than RIP (RIP goes to r->rip). */
static int regs_commit(Regs *r)
{
    if (!DIRTY(r)) {
        regs_discard(r);
        return 0;
    }
    PyObject *d = r->dirty;
    r->dirty = NULL;
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    int rc = 0;
    while (PyDict_Next(d, &pos, &k, &v)) {
        long index = PyLong_AsLong(k);
        unsigned long long value = PyLong_AsUnsignedLongLong(v);
        if (PyErr_Occurred()) {
            rc = -1;
            break;
        }
        if (index == R_RIP) {
            r->rip = value;
        } else if (index == K_EFLAGS) {
            uint64_t f = value;
            r->reg_write(r->uch, r->eflags_id, &f);
        } else if (index >= 0 && index < R_RIP) {
            r->gpr[index] = value;
        }
    }
    Py_DECREF(d);
    return rc;
}

static PyObject *Regs_reset(Regs *self, PyObject *arg)
{
    unsigned long long rip = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred())
        return NULL;
    self->rip = rip;
    regs_discard(self);
    Py_RETURN_NONE;
}

static PyObject *Regs_get_m(Regs *self, PyObject *arg)
{
    long index = PyLong_AsLong(arg);
    if ((index == -1 && PyErr_Occurred()) || !valid_index(index))
        return NULL;
    return regs_get(self, index);
}

static PyObject *Regs_set_m(Regs *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_set(index, value)");
        return NULL;
    }
    long index = PyLong_AsLong(args[0]);
    if ((index == -1 && PyErr_Occurred()) || !valid_index(index))
        return NULL;
    if (regs_set(self, index, args[1]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Regs_commit_m(Regs *self, PyObject *noargs)
{
    (void)noargs;
    if (regs_commit(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLongLong(self->rip);
}

static PyObject *Regs_discard_m(Regs *self, PyObject *noargs)
{
    (void)noargs;
    regs_discard(self);
    Py_RETURN_NONE;
}

static PyObject *Regs_getreg(Regs *self, void *closure)
{
    return regs_get(self, (long)(intptr_t)closure);
}

static int Regs_setreg(Regs *self, PyObject *value, void *closure)
{
    return regs_set(self, (long)(intptr_t)closure, value);
}

#define REG(name, index) {name, (getter)Regs_getreg, (setter)Regs_setreg, "guest " name, \
                          (void *)(intptr_t)(index)}
static PyGetSetDef Regs_getset[] = {
    REG("rax", 0), REG("rcx", 1), REG("rdx", 2), REG("rbx", 3), REG("rsp", 4), REG("rbp", 5),
    REG("rsi", 6), REG("rdi", 7), REG("r8", 8), REG("r9", 9), REG("r10", 10), REG("r11", 11),
    REG("r12", 12), REG("r13", 13), REG("r14", 14), REG("r15", 15), REG("rip", R_RIP),
    REG("eflags", K_EFLAGS), {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Regs_members[] = {
    {"_rip", T_ULONGLONG, offsetof(Regs, rip), 0, "the rip handlers see"},
    {"_dirty", T_OBJECT, offsetof(Regs, dirty), 0, "buffered writes (index -> value) or None"},
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef Regs_methods[] = {
    {"_reset", (PyCFunction)Regs_reset, METH_O, "_reset(rip): present rip, drop buffered writes"},
    {"_get", (PyCFunction)Regs_get_m, METH_O, "_get(index) -> value (buffered writes first)"},
    {"_set", (PyCFunction)(void (*)(void))Regs_set_m, METH_FASTCALL, "_set(index, value)"},
    {"_commit", (PyCFunction)Regs_commit_m, METH_NOARGS,
     "_commit() -> rip: apply buffered writes other than RIP"},
    {"_discard", (PyCFunction)Regs_discard_m, METH_NOARGS, "_discard(): drop buffered writes"},
    {NULL, NULL, 0, NULL},
};

static int Regs_traverse(Regs *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dirty);
    return 0;
}

static int Regs_clear(Regs *self)
{
    Py_CLEAR(self->dirty);
    return 0;
}

static void Regs_dealloc(Regs *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Regs_clear(self);
    tp->tp_free((PyObject *)self);
}

static PyTypeObject RegsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "probes._native.Regs",
    .tp_doc = "Regs(gpr, uch, reg_read, reg_write, eflags_id): pt_regs over the live "
              "register block (the base of probes._regs.NativeRegs).",
    .tp_basicsize = sizeof(Regs),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Regs_init,
    .tp_traverse = (traverseproc)Regs_traverse,
    .tp_clear = (inquiry)Regs_clear,
    .tp_dealloc = (destructor)Regs_dealloc,
    .tp_methods = Regs_methods,
    .tp_members = Regs_members,
    .tp_getset = Regs_getset,
};

/* === Instance, Stack, RpState ============================================================
 *
 * Ownership, so that the hot paths move instances without the GIL: every
 * instance a kretprobe made is owned (one strong reference) by its RpState's
 * `all` array; a Stack (a free list, or a task's in-flight list) holds
 * borrowed pointers. Moving an instance between stacks changes no reference
 * count, so C can do it without taking the GIL and without racing the cyclic
 * GC of another thread (which only ever sees `all`). An instance stays owned
 * while it is on a task's stack (RpState.prune keeps those), and a Stack is
 * emptied before its instances can go.
 */
typedef struct RpState RpState;

typedef struct {
    PyObject_HEAD
    PyObject *rp, *data;
    RpState *state;            /* the kretprobe's state (owner of this instance) */
    PyObject *task;            /* borrowed: the task that made the call, NULL while free */
    unsigned long long ret_addr, fp;
    long long gen;
    char shared, inflight;     /* inflight: on a task's stack */
    char owned;                /* in its state's `all` (RpState.prune lets go of old ones) */
    char *data_ptr;            /* host address of data (data_len bytes) */
    Py_ssize_t data_len;
} Instance;

static PyTypeObject InstanceType;

static int Instance_init(Instance *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"rp", "data", "gen", NULL};
    PyObject *rp, *data;
    long long gen;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOL", kwlist, &rp, &data, &gen))
        return -1;
    Py_XSETREF(self->rp, Py_NewRef(rp));
    Py_XSETREF(self->data, Py_NewRef(data));
    self->task = NULL;
    self->ret_addr = self->fp = 0;
    self->gen = gen;
    self->shared = 0;
    return 0;
}

static PyObject *Instance_get_task(Instance *self, void *closure)
{
    (void)closure;
    return Py_NewRef(self->task != NULL ? self->task : Py_None);
}

static int Instance_set_task(Instance *self, PyObject *value, void *closure)
{
    (void)closure;
    /* Borrowed: a task outlives its in-flight instances (they are reclaimed
     * when it ends, Rethook.task_exit), and a free instance has none. */
    self->task = value == NULL || value == Py_None ? NULL : value;
    return 0;
}

static PyGetSetDef Instance_getset[] = {
    {"task", (getter)Instance_get_task, (setter)Instance_set_task,
     "the task that made the call (None while free)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Instance_members[] = {
    {"rp", T_OBJECT, offsetof(Instance, rp), 0, "the kretprobe"},
    {"data", T_OBJECT, offsetof(Instance, data), 0, "data_size private bytes"},
    {"ret_addr", T_ULONGLONG, offsetof(Instance, ret_addr), 0, "the real return address"},
    {"fp", T_ULONGLONG, offsetof(Instance, fp), 0, "stack address of the return address"},
    {"gen", T_LONGLONG, offsetof(Instance, gen), 0, "the kretprobe's registration it is of"},
    {"shared", T_BOOL, offsetof(Instance, shared), 0, "another instance of the frame is below"},
    {NULL, 0, 0, 0, NULL},
};

static int Instance_traverse(Instance *self, visitproc visit, void *arg)
{
    Py_VISIT(self->rp);
    Py_VISIT(self->data);
    Py_VISIT((PyObject *)self->state);
    return 0;
}

static int Instance_clear(Instance *self)
{
    Py_CLEAR(self->rp);
    Py_CLEAR(self->data);
    Py_CLEAR(self->state);
    self->data_ptr = NULL;
    self->data_len = 0;
    return 0;
}

static void Instance_dealloc(Instance *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Instance_clear(self);
    tp->tp_free((PyObject *)self);
}

static PyTypeObject InstanceType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "probes._native.Instance",
    .tp_doc = "Instance(rp, data, gen): struct kretprobe_instance (the base of "
              "KretprobeInstance).",
    .tp_basicsize = sizeof(Instance),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Instance_init,
    .tp_traverse = (traverseproc)Instance_traverse,
    .tp_clear = (inquiry)Instance_clear,
    .tp_dealloc = (destructor)Instance_dealloc,
    .tp_members = Instance_members,
    .tp_getset = Instance_getset,
};

/* --- Stack: a list of borrowed instance pointers ----------------------------------- */
typedef struct {
    PyObject_HEAD
    Instance **items;
    Py_ssize_t n, cap;
    char task;                 /* a task's in-flight list (else a free list) */
} Stack;

static PyTypeObject StackType;

static int stack_reserve(Stack *s, Py_ssize_t want)
{
    if (want <= s->cap)
        return 0;
    Py_ssize_t cap = s->cap ? s->cap : 8;
    while (cap < want)
        cap *= 2;
    Instance **items = realloc(s->items, (size_t)cap * sizeof *items);   /* not PyMem: no GIL */
    if (items == NULL)
        return -1;
    s->items = items;
    s->cap = cap;
    return 0;
}

static int rpstate_own(RpState *st, Instance *ri);

/* Push with the GIL: an instance an RpState.prune let go of while Python held
 * it (a handler re-registered its kretprobe) is owned again first. */
static int stack_push(Stack *s, Instance *ri)
{
    if (!ri->owned && rpstate_own(ri->state, ri) < 0)
        return -1;
    if (stack_reserve(s, s->n + 1) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    s->items[s->n++] = ri;
    ri->inflight = s->task;
    return 0;
}

/* Push without the GIL; -1 when it would have to grow (the caller takes the slow path).
 * Only owned instances come this way (from a free list or a task's stack). */
static inline int stack_push_nogil(Stack *s, Instance *ri)
{
    if (s->n == s->cap)
        return -1;
    s->items[s->n++] = ri;
    ri->inflight = s->task;
    return 0;
}

static inline Instance *stack_pop_nogil(Stack *s)
{
    Instance *ri = s->items[--s->n];
    if (s->task)
        ri->inflight = 0;
    return ri;
}

static int Stack_init(Stack *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"task", "capacity", NULL};
    int task = 0;
    Py_ssize_t capacity = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|pn", kwlist, &task, &capacity))
        return -1;
    self->task = (char)task;
    self->n = 0;
    if (capacity > 0 && stack_reserve(self, capacity) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static PyObject *Stack_append(Stack *self, PyObject *ri)
{
    if (!PyObject_TypeCheck(ri, &InstanceType) || ((Instance *)ri)->state == NULL) {
        PyErr_SetString(PyExc_TypeError, "a Stack holds kretprobe instances owned by their kretprobe");
        return NULL;
    }
    if (stack_push(self, (Instance *)ri) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *Stack_pop(Stack *self, PyObject *noargs)
{
    (void)noargs;
    if (self->n == 0) {
        PyErr_SetString(PyExc_IndexError, "pop from empty Stack");
        return NULL;
    }
    return Py_NewRef((PyObject *)stack_pop_nogil(self));
}

static PyObject *Stack_clear_m(Stack *self, PyObject *noargs)
{
    (void)noargs;
    while (self->n)
        stack_pop_nogil(self);
    Py_RETURN_NONE;
}

static Py_ssize_t Stack_len(Stack *self)
{
    return self->n;
}

static PyObject *Stack_item(Stack *self, Py_ssize_t i)
{
    if (i < 0 || i >= self->n) {
        PyErr_SetString(PyExc_IndexError, "Stack index out of range");
        return NULL;
    }
    return Py_NewRef((PyObject *)self->items[i]);
}

static void Stack_dealloc(Stack *self)
{
    free(self->items);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Stack_repr(Stack *self)
{
    return PyUnicode_FromFormat("<Stack %s of %zd>", self->task ? "in flight" : "free", self->n);
}

static PySequenceMethods Stack_seq = {
    .sq_length = (lenfunc)Stack_len,
    .sq_item = (ssizeargfunc)Stack_item,
};

static PyMethodDef Stack_methods[] = {
    {"append", (PyCFunction)Stack_append, METH_O, "append(ri): push an instance"},
    {"pop", (PyCFunction)Stack_pop, METH_NOARGS, "pop() -> the last instance"},
    {"clear", (PyCFunction)Stack_clear_m, METH_NOARGS, "clear(): drop every instance"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject StackType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "probes._native.Stack",
    .tp_doc = "Stack(task=False, capacity=0): a list of kretprobe instances (a free list, "
              "or with task=True a task's in-flight list) the C hit paths use without the GIL.",
    .tp_basicsize = sizeof(Stack),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Stack_init,
    .tp_dealloc = (destructor)Stack_dealloc,
    .tp_as_sequence = &Stack_seq,
    .tp_methods = Stack_methods,
    .tp_repr = (reprfunc)Stack_repr,
};

/* --- native actions (forward declarations) ------------------------------------------- */
typedef struct Latency Latency;
typedef struct Trace Trace;          /* native trace events: probes/_trace.c */
/* A kretprobe action's entry_handler or handler (a Latency's, a Trace's). */
typedef struct {
    PyObject_HEAD
    PyObject *act;
} View;
static PyTypeObject CountType, LatencyType, LatencyEntryType, LatencyReturnType;
static PyTypeObject TraceEntryType, TraceReturnType;
static int latency_pure(Latency *lat);
#define TRACE_MAXCAPT 16                 /* a return probe's captures at entry, at most */
static PyTypeObject TraceType;
static int act_pure(PyObject *act);
static void latency_enter(Latency *lat, Instance *ri, void *core);
static void latency_leave(Latency *lat, Instance *ri, void *core);

/* --- RpState: what C needs of a Kretprobe --------------------------------------------- */
struct RpState {
    PyObject_HEAD
    long long gen;
    unsigned long long nmissed, nunwound;
    char has_handler, has_entry;
    PyObject *entry_act, *ret_act;  /* native actions (a Latency, a Trace) in place of the
                                     * handlers, or NULL */
    Stack *free;
    PyObject **all;                 /* every instance made and still owned */
    Py_ssize_t n_all, cap_all;
};

static PyTypeObject RpStateType;

static int RpState_init(RpState *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "", kwlist))
        return -1;
    Py_XSETREF(self->free, (Stack *)PyObject_CallNoArgs((PyObject *)&StackType));
    return self->free != NULL ? 0 : -1;
}

static int rpstate_own(RpState *st, Instance *ri)
{
    if (st == NULL) {
        PyErr_SetString(PyExc_TypeError, "a kretprobe instance no kretprobe owns");
        return -1;
    }
    if (st->n_all == st->cap_all) {
        Py_ssize_t cap = st->cap_all ? 2 * st->cap_all : 8;
        PyObject **all = PyMem_Realloc(st->all, (size_t)cap * sizeof *all);
        if (all == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        st->all = all;
        st->cap_all = cap;
    }
    st->all[st->n_all++] = Py_NewRef((PyObject *)ri);
    ri->owned = 1;
    return 0;
}

static PyObject *RpState_own(RpState *self, PyObject *obj)
{
    if (!PyObject_TypeCheck(obj, &InstanceType) || ((Instance *)obj)->owned) {
        PyErr_SetString(PyExc_TypeError, "own(ri): a new kretprobe instance");
        return NULL;
    }
    Instance *ri = (Instance *)obj;
    if (ri->data != NULL && ri->data != Py_None) {
        Py_buffer view;
        if (PyObject_GetBuffer(ri->data, &view, PyBUF_WRITABLE) < 0)
            return NULL;
        /* The arena (a bytearray under ri.data) is never resized: the pointer lasts. */
        ri->data_ptr = view.buf;
        ri->data_len = view.len;
        PyBuffer_Release(&view);
    }
    Py_XSETREF(ri->state, (RpState *)Py_NewRef(self));
    if (rpstate_own(self, ri) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *RpState_prune(RpState *self, PyObject *noargs)
{
    (void)noargs;
    /* A new registration: instances of older ones go unless still in flight. */
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 0; i < self->n_all; i++) {
        Instance *ri = (Instance *)self->all[i];
        if (ri->gen == self->gen || ri->inflight) {
            self->all[kept++] = (PyObject *)ri;
        } else {
            ri->owned = 0;
            Py_DECREF(ri);
        }
    }
    self->n_all = kept;
    Py_RETURN_NONE;
}

static PyObject *RpState_get_free(RpState *self, void *closure)
{
    (void)closure;
    return Py_NewRef((PyObject *)self->free);
}

static int RpState_set_free(RpState *self, PyObject *value, void *closure)
{
    (void)closure;
    if (value == NULL || !PyObject_TypeCheck(value, &StackType) || ((Stack *)value)->task) {
        PyErr_SetString(PyExc_TypeError, "free must be a free-list Stack");
        return -1;
    }
    /* The old list's instances are of an older registration: no longer free. */
    while (self->free != NULL && self->free->n)
        stack_pop_nogil(self->free);
    Py_XSETREF(self->free, (Stack *)Py_NewRef(value));
    return 0;
}

static PyObject *RpState_set_handlers(RpState *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set_handlers(entry_handler, handler)");
        return NULL;
    }
    PyObject *entry = args[0], *handler = args[1];
    self->has_entry = entry != Py_None;
    self->has_handler = handler != Py_None;
    PyObject *e = NULL, *r = NULL;
    if (Py_TYPE(entry) == &LatencyEntryType || Py_TYPE(entry) == &TraceEntryType)
        e = ((View *)entry)->act;
    if (Py_TYPE(handler) == &LatencyReturnType || Py_TYPE(handler) == &TraceReturnType)
        r = ((View *)handler)->act;
    Py_XSETREF(self->entry_act, e != NULL ? Py_NewRef(e) : NULL);
    Py_XSETREF(self->ret_act, r != NULL ? Py_NewRef(r) : NULL);
    Py_RETURN_NONE;
}

static PyMemberDef RpState_members[] = {
    {"gen", T_LONGLONG, offsetof(RpState, gen), 0, "the registration in-flight instances must be of"},
    {"nmissed", T_ULONGLONG, offsetof(RpState, nmissed), 0, "rp.nmissed"},
    {"nunwound", T_ULONGLONG, offsetof(RpState, nunwound), 0, "rp.nunwound"},
    {"has_handler", T_BOOL, offsetof(RpState, has_handler), READONLY, "rp.handler is set"},
    {"has_entry", T_BOOL, offsetof(RpState, has_entry), READONLY, "rp.entry_handler is set"},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef RpState_getset[] = {
    {"free", (getter)RpState_get_free, (setter)RpState_set_free, "the free list (a Stack)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef RpState_methods[] = {
    {"own", (PyCFunction)RpState_own, METH_O, "own(ri): a new instance of this kretprobe"},
    {"prune", (PyCFunction)RpState_prune, METH_NOARGS,
     "prune(): drop instances of older registrations that are not in flight"},
    {"set_handlers", (PyCFunction)(void (*)(void))RpState_set_handlers, METH_FASTCALL,
     "set_handlers(entry_handler, handler): what the hit paths must call"},
    {NULL, NULL, 0, NULL},
};

static int RpState_traverse(RpState *self, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < self->n_all; i++)
        Py_VISIT(self->all[i]);
    Py_VISIT((PyObject *)self->free);
    Py_VISIT((PyObject *)self->entry_act);
    Py_VISIT((PyObject *)self->ret_act);
    return 0;
}

static int RpState_clear(RpState *self)
{
    if (self->free != NULL)
        while (self->free->n)
            stack_pop_nogil(self->free);
    Py_ssize_t n = self->n_all;
    self->n_all = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        Py_DECREF(self->all[i]);
    Py_CLEAR(self->free);
    Py_CLEAR(self->entry_act);
    Py_CLEAR(self->ret_act);
    return 0;
}

static void RpState_dealloc(RpState *self)
{
    PyObject_GC_UnTrack(self);
    RpState_clear(self);
    PyMem_Free(self->all);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject RpStateType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "probes._native.RpState",
    .tp_doc = "RpState(): a kretprobe's state the C hit paths read (counters, generation, "
              "free list, what its handlers are) and the owner of its instances.",
    .tp_basicsize = sizeof(RpState),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)RpState_init,
    .tp_traverse = (traverseproc)RpState_traverse,
    .tp_clear = (inquiry)RpState_clear,
    .tp_dealloc = (destructor)RpState_dealloc,
    .tp_members = RpState_members,
    .tp_getset = RpState_getset,
    .tp_methods = RpState_methods,
};

/* === Core ============================================================================= */
#define NSPANS 16

typedef struct {
    unsigned long long start, end;
    char *ptr;
    PyObject *keep;
} Span;

typedef struct {
    PyObject_HEAD
    char running;              /* kprobe_running() */
    char sched_on;             /* a scheduler runs: hits are preemption points */
    long long *hits;           /* the machine's preemption countdown (emu.native.Cell) */
    PyObject *hits_keep;
    /* The machine's virtual clock (Machine.now): clock + the counter while counting. */
    long long *vclock, *counting;
    unsigned long long *counter;   /* NULL: the engine shows no counter */
    PyObject *vclock_keep;
    /* The adaptive optimizer (probes._core._NativeManager): hooked hits until the
     * next look for cold hooks (0: never), and the Python side's two entries. */
    long long tidy_every, tidy_left;
    PyObject *on_hot;          /* on_hot(site): an int3 site that wants a hook is hot */
    PyObject *on_tidy;         /* on_tidy(): time to let go of cold hooks */
    Regs *regs;
    PyObject *m;               /* the Machine */
    PyObject *mgr;             /* the KprobeManager (rp._prepare's argument) */
    PyObject *abort;           /* m.abort(exc): a bug of the hit path */
    PyObject *failed;          /* mgr.handler_failed(exc, fn): a handler raised */
    PyObject *span;            /* span(addr) -> (start, end, ptr, keep) of writable memory, or None */
    PyObject *tramp_general;   /* Rethook._trampoline_general(slot) */
    unsigned long long tramp;  /* the trampoline's address */
    uint64_t *cell;            /* host address of the trampoline's cell */
    PyObject *cell_keep;
    int rip_id;
    unsigned long long layout; /* bumped when memory is unmapped or reprotected */
    PyObject *task;            /* the current task (Core.switch) */
    Stack *stack;              /* its in-flight list */
    Span spans[NSPANS];        /* writable spans last used */
    int next_span;
    PyObject *rspan;           /* rspan(addr) -> a span of non-executable memory, or None */
    Span rspans[NSPANS];       /* the spans trace fetches read last */
    int next_rspan;
} Core;

static void core_forget_spans(Core *c)
{
    for (int i = 0; i < NSPANS; i++) {
        c->spans[i].start = c->spans[i].end = 0;
        c->spans[i].ptr = NULL;
        Py_CLEAR(c->spans[i].keep);
        c->rspans[i].start = c->rspans[i].end = 0;
        c->rspans[i].ptr = NULL;
        Py_CLEAR(c->rspans[i].keep);
    }
}

/* Host address of the 8 bytes at addr when a cached span holds them (no GIL needed);
 * the span found moves to the front (the current task's stack, most of the time). */
static inline char *core_word_cached(Core *c, unsigned long long addr)
{
    for (int i = 0; i < NSPANS; i++) {
        Span *s = &c->spans[i];
        if (addr >= s->start && addr + 8 <= s->end && addr + 8 > addr) {
            if (i > 0) {
                Span t = *s;
                *s = c->spans[0];
                c->spans[0] = t;
                s = &c->spans[0];
            }
            return s->ptr + (addr - s->start);
        }
    }
    return NULL;
}

/* The same, asking Python for the mapping on a miss (GIL held): NULL when the
 * bytes are not in writable memory (no error) or on an error (set). */
static char *core_stack_word(Core *c, unsigned long long addr)
{
    char *p = core_word_cached(c, addr);
    if (p != NULL)
        return p;
    PyObject *r = PyObject_CallFunction(c->span, "K", addr);
    if (r == NULL || r == Py_None) {
        Py_XDECREF(r);
        return NULL;
    }
    unsigned long long start, end, ptr;
    PyObject *keep;
    if (!PyArg_ParseTuple(r, "KKKO", &start, &end, &ptr, &keep)) {
        Py_DECREF(r);
        return NULL;
    }
    Span *s = &c->spans[c->next_span];
    c->next_span = (c->next_span + 1) % NSPANS;
    Py_XSETREF(s->keep, Py_NewRef(keep));
    s->start = start;
    s->end = end;
    s->ptr = (char *)(uintptr_t)ptr;
    Py_DECREF(r);
    return core_word_cached(c, addr);
}

/* The scheduler's preemption point at a hit (Machine.preempt_point): the countdown
 * is the machine's own cell, shared with Python; only the slice's end needs Python. */
static int core_cut(Core *c)
{
    PyObject *r = PyObject_CallMethodNoArgs(c->m, s_cut_at_hit);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

static int core_preempt(Core *c)          /* with the GIL */
{
    if (!c->sched_on || --*c->hits > 0)
        return 0;
    return core_cut(c);
}

static void core_count_hit(Core *c)       /* without it */
{
    if (!c->sched_on || --*c->hits > 0)
        return;
    PyGILState_STATE gil = PyGILState_Ensure();
    if (core_cut(c) < 0)
        hand_over(c->abort, NULL);
    PyGILState_Release(gil);
}

static void core_set_pc(Core *c, uint64_t pc)
{
    /* Inside a code hook RIP is written through the API (it ends the block). */
    c->regs->reg_write(c->regs->uch, c->rip_id, &pc);
}

static int Core_init(Core *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"machine", "mgr", "regs", "span", "tramp_general", "abort", "failed",
                             "tramp", "cell", "cell_keep", "rip_id", "hits", "hits_keep", "vclock",
                             "counting", "counter", "vclock_keep", NULL};
    PyObject *m, *mgr, *regs, *span, *general, *abort, *failed, *keep, *hits_keep, *vkeep;
    unsigned long long tramp, cell, hits, vclock, counting, counter;
    int rip_id;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO!OOOOKKOiKOKKKO", kwlist, &m, &mgr, &RegsType,
                                     &regs, &span, &general, &abort, &failed, &tramp, &cell,
                                     &keep, &rip_id, &hits, &hits_keep, &vclock, &counting,
                                     &counter, &vkeep))
        return -1;
    if (!cell || !hits || !vclock || !counting) {
        PyErr_SetString(PyExc_ValueError, "Core: null trampoline cell, countdown or clock");
        return -1;
    }
    self->vclock = (long long *)(uintptr_t)vclock;
    self->counting = (long long *)(uintptr_t)counting;
    self->counter = (unsigned long long *)(uintptr_t)counter;
    Py_XSETREF(self->vclock_keep, Py_NewRef(vkeep));
    self->hits = (long long *)(uintptr_t)hits;
    Py_XSETREF(self->hits_keep, Py_NewRef(hits_keep));
    Py_XSETREF(self->m, Py_NewRef(m));
    Py_XSETREF(self->mgr, Py_NewRef(mgr));
    Py_XSETREF(self->regs, (Regs *)Py_NewRef(regs));
    Py_XSETREF(self->span, Py_NewRef(span));
    Py_XSETREF(self->tramp_general, Py_NewRef(general));
    Py_XSETREF(self->abort, Py_NewRef(abort));
    Py_XSETREF(self->failed, Py_NewRef(failed));
    Py_XSETREF(self->cell_keep, Py_NewRef(keep));
    self->tramp = tramp;
    self->cell = (uint64_t *)(uintptr_t)cell;
    self->rip_id = rip_id;
    self->running = 0;
    return 0;
}

static PyObject *Core_switch(Core *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyObject_TypeCheck(args[1], &StackType) || !((Stack *)args[1])->task) {
        PyErr_SetString(PyExc_TypeError, "switch(task, in-flight Stack, scheduled)");
        return NULL;
    }
    int on = PyObject_IsTrue(args[2]);
    if (on < 0)
        return NULL;
    Py_XSETREF(self->task, Py_NewRef(args[0]));
    Py_XSETREF(self->stack, (Stack *)Py_NewRef(args[1]));
    self->sched_on = (char)on;
    Py_RETURN_NONE;
}

static PyObject *Core_invalidate(Core *self, PyObject *noargs)
{
    (void)noargs;
    core_forget_spans(self);
    self->layout++;
    Py_RETURN_NONE;
}

static PyObject *Core_address(PyObject *self, PyObject *noargs)
{
    (void)noargs;
    return PyLong_FromUnsignedLongLong((unsigned long long)(uintptr_t)self);
}

static PyObject *Core_get_tidy_every(Core *self, void *closure)
{
    (void)closure;
    return PyLong_FromLongLong(self->tidy_every);
}

static int Core_set_tidy_every(Core *self, PyObject *value, void *closure)
{
    (void)closure;
    long long n = value != NULL ? PyLong_AsLongLong(value) : -1;
    if (n < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "tidy_every must be an int >= 0");
        return -1;
    }
    self->tidy_every = self->tidy_left = n;
    return 0;
}

static PyGetSetDef Core_getset[] = {
    {"tidy_every", (getter)Core_get_tidy_every, (setter)Core_set_tidy_every,
     "hooked hits between calls of on_tidy (0: never)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Core_methods[] = {
    {"switch", (PyCFunction)(void (*)(void))Core_switch, METH_FASTCALL,
     "switch(task, stack, scheduled): the current task, its in-flight Stack, and whether a "
     "scheduler runs (Machine.on_switch)"},
    {"invalidate", (PyCFunction)Core_invalidate, METH_NOARGS,
     "invalidate(): memory was unmapped or reprotected: forget the cached spans"},
    {"address", (PyCFunction)Core_address, METH_NOARGS,
     "address() -> the object's address: tramp_code's user data (keep the object alive)"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Core_members[] = {
    {"running", T_BOOL, offsetof(Core, running), 0, "kprobe_running()"},
    {"on_hot", T_OBJECT, offsetof(Core, on_hot), 0, "on_hot(site), or None"},
    {"on_tidy", T_OBJECT, offsetof(Core, on_tidy), 0, "on_tidy(), or None"},
    {"regs", T_OBJECT, offsetof(Core, regs), READONLY, "the pt_regs handlers get"},
    {"rspan", T_OBJECT, offsetof(Core, rspan), 0,
     "rspan(addr) -> (start, end, host address, keep) of non-executable memory, or None "
     "(trace fetches read there without Python)"},
    {NULL, 0, 0, 0, NULL},
};

static int Core_traverse(Core *self, visitproc visit, void *arg)
{
    Py_VISIT(self->regs);
    Py_VISIT(self->m);
    Py_VISIT(self->mgr);
    Py_VISIT(self->abort);
    Py_VISIT(self->failed);
    Py_VISIT(self->span);
    Py_VISIT(self->tramp_general);
    Py_VISIT(self->cell_keep);
    Py_VISIT(self->hits_keep);
    Py_VISIT(self->vclock_keep);
    Py_VISIT(self->on_hot);
    Py_VISIT(self->on_tidy);
    Py_VISIT(self->task);
    Py_VISIT((PyObject *)self->stack);
    Py_VISIT(self->rspan);
    for (int i = 0; i < NSPANS; i++) {
        Py_VISIT(self->spans[i].keep);
        Py_VISIT(self->rspans[i].keep);
    }
    return 0;
}

static int Core_clear(Core *self)
{
    Py_CLEAR(self->regs);
    Py_CLEAR(self->m);
    Py_CLEAR(self->mgr);
    Py_CLEAR(self->abort);
    Py_CLEAR(self->failed);
    Py_CLEAR(self->span);
    Py_CLEAR(self->tramp_general);
    Py_CLEAR(self->cell_keep);
    Py_CLEAR(self->hits_keep);
    Py_CLEAR(self->vclock_keep);
    Py_CLEAR(self->on_hot);
    Py_CLEAR(self->on_tidy);
    Py_CLEAR(self->task);
    Py_CLEAR(self->stack);
    Py_CLEAR(self->rspan);
    core_forget_spans(self);
    return 0;
}

static void Core_dealloc(Core *self)
{
    PyObject_GC_UnTrack(self);
    Core_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "probes._native.Core",
    .tp_doc = "Core(machine, mgr, regs, span, tramp_general, abort, failed, tramp, cell, "
              "cell_keep, rip_id): one probe manager's state for the native hit paths.",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Core_init,
    .tp_traverse = (traverseproc)Core_traverse,
    .tp_clear = (inquiry)Core_clear,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_methods = Core_methods,
    .tp_members = Core_members,
    .tp_getset = Core_getset,
};

/* === the trampoline ====================================================================== */
/* The return of a lone instance whose kretprobe has no Python handler to call: no
 * GIL. 1: done; 0: the GIL path must take it. */
static int trace_leave_pure(Core *c, Trace *t, Instance *ri);
static PyObject *trace_call(Core *c, PyObject *fn, Trace *t, PyObject *const *args);

/* A handler fn(args[0], args[1]) from a hit path with the GIL: a native trace
 * action runs with the hitting core (its span cache and clock), others are called. */
static PyObject *call_handler(Core *c, PyObject *fn, PyObject *const *args)
{
    PyTypeObject *tp = Py_TYPE(fn);
    if (tp == &TraceType)
        return trace_call(c, fn, (Trace *)fn, args);
    if (tp == &TraceEntryType || tp == &TraceReturnType)
        return trace_call(c, fn, (Trace *)((View *)fn)->act, args);
    return PyObject_Vectorcall(fn, args, 2, NULL);
}

static int tramp_pure(Core *c)
{
    Stack *stack = c->stack;
    if (stack == NULL || stack->n == 0)
        return 0;
    Instance *ri = stack->items[stack->n - 1];
    RpState *st = ri->state;
    if (ri->fp != c->regs->gpr[R_RSP] - 8 || ri->shared || ri->gen != st->gen)
        return 0;
    if (!c->running && st->has_handler && (st->ret_act == NULL || !act_pure(st->ret_act)))
        return 0;
    if (st->free->n == st->free->cap)
        return 0;
    int traced = !c->running && st->ret_act != NULL && Py_TYPE(st->ret_act) == &TraceType;
    if (traced && trace_leave_pure(c, (Trace *)st->ret_act, ri) != 0)
        return 0;
    stack_pop_nogil(stack);
    if (c->running)
        st->nmissed++;
    else if (st->ret_act != NULL && !traced)
        latency_leave((Latency *)st->ret_act, ri, c);
    ri->task = NULL;
    stack_push_nogil(st->free, ri);
    *c->cell = ri->ret_addr;
    core_count_hit(c);
    return 1;
}

static int tramp_general(Core *c, unsigned long long slot)
{
    PyObject *r = PyObject_CallFunction(c->tramp_general, "K", slot);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* ri back on its kretprobe's free list when it is of the current registration. */
static int give_back(Instance *ri, int current)
{
    ri->task = NULL;
    if (!current)
        return 0;
    return stack_push(ri->state->free, ri);
}

/* The return of a hijacked call with the GIL (Rethook._trampoline_hook's fast path). */
static int tramp_run(Core *c)
{
    Regs *regs = c->regs;
    unsigned long long slot = regs->gpr[R_RSP] - 8;
    Stack *stack = c->stack;
    if (stack == NULL || stack->n == 0)
        return tramp_general(c, slot);
    Instance *ri = stack->items[stack->n - 1];
    if (ri->fp != slot || ri->shared)
        return tramp_general(c, slot);
    stack_pop_nogil(stack);
    Py_INCREF(ri);
    int rc = -1;
    RpState *st = (RpState *)Py_NewRef((PyObject *)ri->state);
    PyObject *handler = NULL;
    unsigned long long real = ri->ret_addr;
    int current = ri->gen == st->gen;   /* changes when rp is unregistered: then no handler */
    if (c->running) {
        st->nmissed++;
    } else if (current && st->has_handler) {
        handler = PyObject_GetAttr(ri->rp, s_rp_handler);
        if (handler == NULL)
            goto out;
        c->running = 1;
        regs->rip = real;
        regs_discard(regs);
        PyObject *args[2] = {(PyObject *)ri, (PyObject *)regs};
        PyObject *r = handler != Py_None ? call_handler(c, handler, args)
                                         : Py_NewRef(Py_None);
        if (r == NULL) {
            regs_discard(regs);
            hand_over(c->failed, handler);
            c->running = 0;
            if (give_back(ri, current) < 0)
                goto out;
            *c->cell = real;
            core_set_pc(c, real);     /* stopping before the jmp: resume past it */
            rc = 0;
            goto out;
        }
        Py_DECREF(r);
        if (DIRTY(regs)) {
            if (regs_commit(regs) < 0)
                goto out;
            real = regs->rip;
        }
        c->running = 0;
    }
    if (give_back(ri, current) < 0)
        goto out;
    *c->cell = real;
    rc = core_preempt(c);
out:
    Py_XDECREF(handler);
    Py_DECREF(st);
    Py_DECREF(ri);
    return rc;
}

static void tramp_code(uc_engine *uc, uint64_t address, uint32_t size, void *user)
{
    (void)uc; (void)address; (void)size;
    Core *c = (Core *)user;
    if (tramp_pure(c))
        return;
    PyGILState_STATE gil = PyGILState_Ensure();
    Py_INCREF(c);
    if (tramp_run(c) < 0)
        hand_over(c->abort, NULL);
    Py_DECREF(c);
    PyGILState_Release(gil);
}

/* === Hit ================================================================================= */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Core *core;
    PyObject *site;        /* the _Site: .handler (when stale), .gone */
    PyObject *active;      /* tuple of the enabled Kprobes */
    PyObject *general;     /* the Python hit path, general(addr) */
    PyObject *emulate;     /* the emulate op of an emulated step (what C cannot do), or None */
    PyObject *rp;          /* the Kretprobe of a kretprobe entry site, or NULL */
    RpState *state;        /* its state */
    PyObject *counts;      /* tuple of the native pre_handlers (Count, Trace) when every
                            * handler is one, or NULL */
    int traces;            /* Traces among them */
    PyObject *rps, *states;  /* per active probe: its Kretprobe and RpState (None: a kprobe) */
    unsigned long long addr, next, boost;
    unsigned long long arg;   /* a jmp or call's target; the bytes a ret pops past the address */
    int kind, push_reg;       /* push_reg: a push or pop's register */
    char optimized, stale; /* stale: the site is served by another handler now */
    unsigned long long hits;        /* hits taken (any path) */
    unsigned long long base;        /* hits at the optimizer's last look */
    unsigned long long promote_at;  /* an int3 site wanting a hook: on_hot at this many (0: no) */
} Hit;

static PyTypeObject HitType;
static int hit_run(Hit *h);
static int hit_traces(Hit *h);
static int trace_enter_pure(Hit *h, Trace *t, Instance *ri);
static void trace_entered(Trace *t);
static int kret_enter(Hit *h, PyObject *rp, RpState *st, int nested);

typedef struct {
    PyObject_HEAD
    unsigned long long value;
} Count;

static int call_general(Hit *h)
{
    PyObject *r = PyObject_CallFunction(h->general, "K", h->addr);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* The stack word a step reads or writes: 1 (rsp - 8 for a push or call, rsp for a
 * pop or ret), 0 (rsp), -1 none. */
static inline int step_word(int kind)
{
    return kind == STEP_PUSH || kind == STEP_CALL ? 1
         : kind == STEP_POP || kind == STEP_RET ? 0 : -1;
}

/* The step will be done without the GIL: a shape C does, its stack word cached. */
static inline int step_ready(Hit *h)
{
    int w = step_word(h->kind);
    return h->kind != STEP_PY
        && (w < 0 || core_word_cached(h->core, h->core->regs->gpr[R_RSP] - 8 * (uint64_t)w) != NULL);
}

/* The probed instruction's step without the GIL, for the shapes C does
 * (arch/x86/kernel/kprobes/core.c's kprobe_emulate_*; a stack word outside the
 * writable spans cached is the Python op's): 1 done, 0 not here (nothing changed). */
static inline int step_pure(Hit *h)
{
    Core *c = h->core;
    uint64_t *gpr = c->regs->gpr;
    switch (h->kind) {
    case STEP_NONE:
        return 1;
    case STEP_NOP:
        gpr[R_RIP] = h->next;
        return 1;
    case STEP_BOOST:
        gpr[R_RIP] = h->boost;
        return 1;
    case STEP_PUSH: {
        unsigned long long sp = gpr[R_RSP] - 8;
        char *p = core_word_cached(c, sp);
        if (p == NULL)
            return 0;
        uint64_t v = gpr[h->push_reg];    /* push rsp stores the value before the decrement */
        memcpy(p, &v, 8);
        gpr[R_RSP] = sp;
        gpr[R_RIP] = h->next;
        return 1;
    }
    case STEP_POP: {
        char *p = core_word_cached(c, gpr[R_RSP]);
        if (p == NULL)
            return 0;
        uint64_t v;
        memcpy(&v, p, 8);
        gpr[R_RSP] += 8;
        gpr[h->push_reg] = v;             /* pop rsp: the loaded value wins */
        gpr[R_RIP] = h->next;
        return 1;
    }
    case STEP_JMP:
        gpr[R_RIP] = h->arg;
        return 1;
    case STEP_CALL: {
        unsigned long long sp = gpr[R_RSP] - 8;
        char *p = core_word_cached(c, sp);
        if (p == NULL)
            return 0;
        uint64_t ret = h->next;
        memcpy(p, &ret, 8);
        gpr[R_RSP] = sp;
        gpr[R_RIP] = h->arg;
        return 1;
    }
    case STEP_RET: {
        char *p = core_word_cached(c, gpr[R_RSP]);
        if (p == NULL)
            return 0;
        uint64_t target;
        memcpy(&target, p, 8);
        gpr[R_RSP] += 8 + h->arg;
        gpr[R_RIP] = target;
        return 1;
    }
    default:
        return 0;
    }
}

/* The same with the GIL: misses of the span cache ask Python, other shapes run the
 * Python emulate op. */
static int hit_step(Hit *h)
{
    Core *c = h->core;
    uint64_t *gpr = c->regs->gpr;
    int w = step_word(h->kind);
    if (w >= 0 && core_stack_word(c, gpr[R_RSP] - 8 * (uint64_t)w) == NULL && PyErr_Occurred())
        return -1;
    if (step_pure(h))
        return 0;
    PyObject *r = PyObject_CallNoArgs(h->emulate);
    if (r == NULL)
        return -1;
    unsigned long long nxt = PyLong_AsUnsignedLongLong(r);
    Py_DECREF(r);
    if (PyErr_Occurred())
        return -1;
    gpr[R_RIP] = nxt;
    return 0;
}

/* A kprobe site whose handlers are all counters (or none), or a kretprobe entry
 * with nothing to call in Python: no GIL. 1 done, 0 the GIL path must take it. */
static int hit_pure(Hit *h)
{
    Core *c = h->core;
    if (h->stale || c->running)
        return 0;
    if (h->rp == NULL) {
        if (h->counts == NULL)
            return 0;
        if (!step_ready(h))
            return 0;
        if (h->traces && hit_traces(h) != 0)
            return 0;
        Py_ssize_t n = PyTuple_GET_SIZE(h->counts);
        for (Py_ssize_t i = 0; i < n; i++) {
            PyObject *a = PyTuple_GET_ITEM(h->counts, i);
            if (Py_TYPE(a) == &CountType)
                ((Count *)a)->value++;
        }
        step_pure(h);
        h->hits++;
        core_count_hit(c);
        return 1;
    }
    RpState *st = h->state;
    Stack *stack = c->stack, *free = st->free;
    uint64_t *gpr = c->regs->gpr;
    unsigned long long sp = gpr[R_RSP];
    if ((st->has_entry && (st->entry_act == NULL || !act_pure(st->entry_act)))
        || stack == NULL || free->n == 0 || stack->n == stack->cap
        || (stack->n && stack->items[stack->n - 1]->fp <= sp))
        return 0;
    char *slot = core_word_cached(c, sp);
    if (slot == NULL || !step_ready(h))
        return 0;
    /* A Trace captures into the data of the instance it takes, before taking it:
     * a capture that needs the GIL leaves nothing changed but a free instance's data. */
    int traced = st->entry_act != NULL && Py_TYPE(st->entry_act) == &TraceType;
    if (traced && trace_enter_pure(h, (Trace *)st->entry_act, free->items[free->n - 1]) != 0)
        return 0;
    Instance *ri = stack_pop_nogil(free);
    ri->task = c->task;
    if (traced)
        trace_entered((Trace *)st->entry_act);
    else if (st->entry_act != NULL)
        latency_enter((Latency *)st->entry_act, ri, c);
    uint64_t ret, t = c->tramp;
    memcpy(&ret, slot, 8);
    ri->ret_addr = ret;
    ri->fp = sp;
    ri->shared = 0;
    memcpy(slot, &t, 8);
    stack_push_nogil(stack, ri);
    step_pure(h);
    h->hits++;
    core_count_hit(c);
    return 1;
}

/* The optimizer's counters, after a hit (pure or not): a hot int3 site that wants
 * a hook, or enough hooked hits to look for cold hooks, calls Python (rarely). */
static void hit_after(Hit *h)
{
    Core *c = h->core;
    PyObject *fn = NULL, *arg = NULL;
    if (h->optimized) {
        if (c->tidy_every <= 0 || --c->tidy_left > 0)
            return;
        c->tidy_left = c->tidy_every;
        fn = c->on_tidy;
    } else {
        if (h->promote_at == 0 || h->hits < h->promote_at)
            return;
        h->promote_at = 0;
        fn = c->on_hot;
        arg = h->site;
    }
    if (fn == NULL || fn == Py_None)
        return;
    PyGILState_STATE gil = PyGILState_Ensure();
    Py_INCREF(c);
    Py_INCREF(fn);
    Py_XINCREF(arg);           /* the call may re-serve the site and free this Hit */
    PyObject *r = arg != NULL ? PyObject_CallOneArg(fn, arg) : PyObject_CallNoArgs(fn);
    if (r == NULL)
        hand_over(c->abort, NULL);
    Py_XDECREF(r);
    Py_XDECREF(arg);
    Py_DECREF(fn);
    Py_DECREF(c);
    PyGILState_Release(gil);
}

static int site_gone(Hit *h)
{
    PyObject *g = PyObject_GetAttr(h->site, s_gone);
    if (g == NULL)
        return -1;
    int gone = PyObject_IsTrue(g);
    Py_DECREF(g);
    return gone;
}

/* kprobe_int3_handler / optimized_callback for the site's enabled probes. */
static int hit_kprobe(Hit *h)
{
    Core *c = h->core;
    Regs *regs = c->regs;
    if (c->running)                 /* kprobes_inc_nmissed_count and the reentry step */
        return call_general(h);
    c->running = 1;
    regs->rip = h->addr;
    regs_discard(regs);
    unsigned long long layout = c->layout;
    Py_ssize_t n = PyTuple_GET_SIZE(h->active);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *kp = PyTuple_GET_ITEM(h->active, i);
        PyObject *pre = PyObject_GetAttr(kp, s_pre_handler);
        if (pre == NULL)
            return -1;
        if (pre == Py_None) {
            Py_DECREF(pre);
            continue;
        }
        /* A handler earlier in this walk may have disabled kp (or unmapped it). */
        if (i > 0) {
            PyObject *f = PyObject_GetAttr(kp, s_flags);
            long flags = f != NULL ? PyLong_AsLong(f) : -1;
            Py_XDECREF(f);
            if (flags == -1 && PyErr_Occurred()) {
                Py_DECREF(pre);
                return -1;
            }
            if (flags & NOT_FIRING) {
                Py_DECREF(pre);
                continue;
            }
        }
        PyObject *rp = h->rps != NULL ? PyTuple_GET_ITEM(h->rps, i) : Py_None;
        if (rp != Py_None) {          /* a kretprobe's entry probe: its entry in C */
            int done = kret_enter(h, rp, (RpState *)PyTuple_GET_ITEM(h->states, i), 1);
            if (done < 0) {
                Py_DECREF(pre);
                return -1;
            }
            if (done == 0) {
                Py_DECREF(pre);
                continue;
            }
        }
        PyObject *args[2] = {kp, (PyObject *)regs};
        PyObject *r = call_handler(c, pre, args);
        if (r == NULL) {
            regs_discard(regs);
            hand_over(c->failed, pre);
            Py_DECREF(pre);
            continue;
        }
        Py_DECREF(pre);
        int moved = PyObject_IsTrue(r);
        Py_DECREF(r);
        if (moved < 0 || (DIRTY(regs) && regs_commit(regs) < 0))
            return -1;
        if (moved) {                  /* resume at regs.rip (reset_current_kprobe) */
            c->running = 0;
            if (h->optimized)
                core_set_pc(c, regs->rip);
            else
                regs->gpr[R_RIP] = regs->rip;
            return core_preempt(c);
        }
    }
    int gone = c->layout != layout ? site_gone(h) : 0;   /* a handler unmapped the code? */
    if (gone < 0)
        return -1;
    if (h->optimized) {
        c->running = 0;
        if (gone)                     /* fetch what is there now */
            core_set_pc(c, h->addr);
    } else if (gone) {
        regs->gpr[R_RIP] = h->addr;
        c->running = 0;
    } else {
        if (hit_step(h) < 0)
            return -1;
        c->running = 0;
    }
    return core_preempt(c);
}

static int call_prepare(PyObject *rp, Core *c, Instance *ri)
{
    PyObject *p = PyObject_CallMethodObjArgs(rp, s_prepare, c->mgr, (PyObject *)ri,
                                             (PyObject *)c->regs, NULL);
    Py_XDECREF(p);
    return p == NULL ? -1 : 0;
}

/* pre_handler_kretprobe + arch_prepare_kretprobe for the kretprobe rp at h's site,
 * with the GIL: 0 done, 1 an uncommon shape (nothing changed: the Python
 * pre_handler takes it), -1 an error. With `nested` it is one probe of a kprobe
 * site's walk (kprobe_running() already set, regs.rip the site's). */
static int kret_enter(Hit *h, PyObject *rp, RpState *st, int nested)
{
    Core *c = h->core;
    Regs *regs = c->regs;
    uint64_t *gpr = regs->gpr;
    Stack *stack = c->stack, *free = st->free;
    unsigned long long sp = gpr[R_RSP];
    /* A miss, stale frames below this one (or this frame hijacked already by
     * another kretprobe), a return address outside writable memory. */
    if (stack == NULL || free->n == 0 || (stack->n && stack->items[stack->n - 1]->fp <= sp))
        return 1;
    char *slot = core_stack_word(c, sp);
    if (slot == NULL)
        return PyErr_Occurred() ? -1 : 1;
    Instance *ri = (Instance *)Py_NewRef((PyObject *)stack_pop_nogil(free));
    int rc = -1;
    PyObject *entry = NULL;
    ri->task = c->task;
    int hijack = 1;
    if (st->has_entry) {
        entry = PyObject_GetAttr(rp, s_entry_handler);
        if (entry == NULL)
            goto out;
        if (!nested) {
            c->running = 1;
            regs->rip = h->addr;
        }
        regs_discard(regs);
        PyObject *args[2] = {(PyObject *)ri, (PyObject *)regs};
        PyObject *r = entry != Py_None ? call_handler(c, entry, args)
                                       : Py_NewRef(Py_None);
        int skip;
        if (r == NULL) {
            regs_discard(regs);
            hand_over(c->failed, entry);
            skip = 1;
        } else {
            skip = PyObject_IsTrue(r);
            Py_DECREF(r);
            if (skip < 0)
                goto out;
            if (DIRTY(regs)) {
                if (regs_commit(regs) < 0)
                    goto out;
                if (gpr[R_RSP] != sp) {     /* the handler moved the stack: go general */
                    hijack = 0;
                    if (!skip && call_prepare(rp, c, ri) < 0)
                        goto out;
                }
            }
        }
        if (!nested)
            c->running = 0;
        if (skip) {                  /* the instance goes back: no return handler */
            /* (to no list if the handler re-registered the kretprobe meanwhile) */
            if (give_back(ri, ri->gen == st->gen) < 0)
                goto out;
            hijack = 0;
        }
        /* The handler may have unmapped or reprotected memory, or switched... */
        if (hijack && (c->stack != stack || (slot = core_stack_word(c, sp)) == NULL)) {
            if (PyErr_Occurred())
                goto out;
            hijack = 0;
            if (call_prepare(rp, c, ri) < 0)
                goto out;
        }
    }
    if (hijack) {
        uint64_t ret, t = c->tramp;
        memcpy(&ret, slot, 8);
        ri->ret_addr = ret;
        ri->fp = sp;
        ri->shared = 0;
        memcpy(slot, &t, 8);
        if (stack_push(stack, ri) < 0)
            goto out;
    }
    rc = 0;
out:
    Py_XDECREF(entry);
    Py_DECREF(ri);
    return rc;
}

/* A site whose only enabled probe is a kretprobe's (Rethook.entry_fast_path), with
 * the GIL: the entry, then the step. */
static int hit_kretprobe(Hit *h)
{
    Core *c = h->core;
    if (c->running)                 /* nmissed, and the reentry step: the general path */
        return call_general(h);
    int r = kret_enter(h, h->rp, h->state, 0);
    if (r != 0)
        return r < 0 ? -1 : call_general(h);
    if (!h->optimized && hit_step(h) < 0)
        return -1;
    return core_preempt(c);
}

static int hit_run(Hit *h)
{
    if (h->stale) {           /* re-served during a run (probes._core._serve): hand it on */
        PyObject *now = PyObject_GetAttr(h->site, s_handler);   /* held: a handler may replace it */
        if (now == NULL)
            return -1;
        int rc = 0;
        if (now != Py_None && now != (PyObject *)h) {
            if (Py_TYPE(now) == &HitType) {
                rc = hit_run((Hit *)now);
            } else {
                PyObject *r = h->optimized
                    ? PyObject_CallFunction(now, "OKIO", Py_None, h->addr, 0, Py_None)
                    : PyObject_CallFunction(now, "K", h->addr);
                Py_XDECREF(r);
                rc = r == NULL ? -1 : 0;
            }
        }
        Py_DECREF(now);
        return rc;
    }
    return h->rp != NULL ? hit_kretprobe(h) : hit_kprobe(h);
}

static PyObject *Hit_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                PyObject *kwnames)
{
    (void)args; (void)nargsf; (void)kwnames;     /* the address is known */
    Hit *h = (Hit *)self;
    if (hit_pure(h)) {
        hit_after(h);
        Py_RETURN_NONE;
    }
    Py_INCREF(h);
    Core *c = (Core *)Py_NewRef(h->core);
    if (!h->stale)
        h->hits++;
    if (hit_run(h) < 0)
        hand_over(c->abort, NULL);
    else if (!h->stale)
        hit_after(h);
    Py_DECREF(c);
    Py_DECREF(h);
    Py_RETURN_NONE;
}

static void hit_code(uc_engine *uc, uint64_t address, uint32_t size, void *user)
{
    (void)uc; (void)address; (void)size;
    if (hit_pure((Hit *)user)) {
        hit_after((Hit *)user);
        return;
    }
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *r = Hit_vectorcall((PyObject *)user, NULL, 0, NULL);
    Py_XDECREF(r);
    PyGILState_Release(gil);
}

/* For emu._native's trap table: an int3 at the site, without the GIL first. */
static int hit_trap(void *user, uc_engine *uc, uint64_t address)
{
    (void)uc; (void)address;
    if (!hit_pure((Hit *)user))
        return 0;
    hit_after((Hit *)user);
    return 1;
}

static int Hit_init(Hit *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"core", "site", "active", "general", "addr", "optimized", "kind",
                             "next", "boost", "push_reg", "emulate", "rp", "counts", "arg", NULL};
    PyObject *core, *site, *active, *general, *emulate, *rp, *counts;
    unsigned long long addr, next, boost, arg = 0;
    int optimized, kind, push_reg;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OO!OKpiKKiOOO|K", kwlist, &CoreType, &core, &site,
                                     &PyTuple_Type, &active, &general, &addr, &optimized, &kind,
                                     &next, &boost, &push_reg, &emulate, &rp, &counts, &arg))
        return -1;
    int emulated = kind != STEP_NONE && kind != STEP_NOP && kind != STEP_BOOST;
    if (kind < STEP_NONE || kind > STEP_RET
        || ((kind == STEP_PUSH || kind == STEP_POP) && (push_reg < 0 || push_reg >= R_RIP))
        || (kind == STEP_RET && arg > 0xFFFF) || (emulated && !PyCallable_Check(emulate))
        || (!optimized && kind == STEP_NONE) || (optimized && kind != STEP_NONE)) {
        PyErr_SetString(PyExc_ValueError, "Hit: inconsistent step");
        return -1;
    }
    PyObject *state = NULL;
    if (rp != Py_None) {
        state = PyObject_GetAttrString(rp, "_c");
        if (state == NULL)
            return -1;
        if (!PyObject_TypeCheck(state, &RpStateType)) {
            Py_DECREF(state);
            PyErr_SetString(PyExc_TypeError, "Hit: the kretprobe's _c must be an RpState");
            return -1;
        }
    }
    if (counts != Py_None) {
        if (!PyTuple_Check(counts)) {
            Py_XDECREF(state);
            PyErr_SetString(PyExc_TypeError, "Hit: counts must be a tuple of Count/Trace or None");
            return -1;
        }
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(counts); i++) {
            PyTypeObject *tp = Py_TYPE(PyTuple_GET_ITEM(counts, i));
            if (tp != &CountType && tp != &TraceType) {
                Py_XDECREF(state);
                PyErr_SetString(PyExc_TypeError, "Hit: counts must be a tuple of Count/Trace or None");
                return -1;
            }
        }
    }
    self->traces = 0;
    for (Py_ssize_t i = 0; counts != Py_None && i < PyTuple_GET_SIZE(counts); i++)
        self->traces += Py_TYPE(PyTuple_GET_ITEM(counts, i)) == &TraceType;
    Py_XSETREF(self->core, (Core *)Py_NewRef(core));
    Py_XSETREF(self->site, Py_NewRef(site));
    Py_XSETREF(self->active, Py_NewRef(active));
    Py_XSETREF(self->general, Py_NewRef(general));
    Py_XSETREF(self->emulate, Py_NewRef(emulate));
    Py_XSETREF(self->rp, rp == Py_None ? NULL : Py_NewRef(rp));
    Py_XSETREF(self->state, (RpState *)state);
    Py_XSETREF(self->counts, counts == Py_None ? NULL : Py_NewRef(counts));
    /* The kretprobes among the active probes (their entries are taken in C). */
    Py_ssize_t n = PyTuple_GET_SIZE(active);
    PyObject *rps = PyTuple_New(n), *states = PyTuple_New(n);
    int any = 0;
    for (Py_ssize_t i = 0; rps != NULL && states != NULL && i < n; i++) {
        PyObject *krp = PyObject_GetAttrString(PyTuple_GET_ITEM(active, i), "_kretprobe");
        PyObject *kst = krp != NULL && krp != Py_None ? PyObject_GetAttrString(krp, "_c") : NULL;
        if (krp == NULL || (krp != Py_None && (kst == NULL || !PyObject_TypeCheck(kst, &RpStateType)))) {
            if (kst != NULL && !PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "Hit: a kretprobe's _c must be an RpState");
            Py_XDECREF(krp);
            Py_XDECREF(kst);
            Py_CLEAR(rps);
            break;
        }
        any |= krp != Py_None;
        PyTuple_SET_ITEM(rps, i, krp);
        PyTuple_SET_ITEM(states, i, kst != NULL ? kst : Py_NewRef(Py_None));
    }
    if (rps == NULL || states == NULL) {
        Py_XDECREF(rps);
        Py_XDECREF(states);
        return -1;
    }
    Py_XSETREF(self->rps, any ? rps : NULL);
    Py_XSETREF(self->states, any ? states : NULL);
    if (!any) {
        Py_DECREF(rps);
        Py_DECREF(states);
    }
    self->addr = addr;
    self->next = next;
    self->boost = boost;
    self->kind = kind;
    self->push_reg = push_reg;
    self->arg = arg;
    self->optimized = (char)optimized;
    self->stale = 0;
    self->hits = self->base = self->promote_at = 0;
    self->vectorcall = Hit_vectorcall;
    return 0;
}

static int Hit_traverse(Hit *self, visitproc visit, void *arg)
{
    Py_VISIT(self->core);
    Py_VISIT(self->site);
    Py_VISIT(self->active);
    Py_VISIT(self->general);
    Py_VISIT(self->emulate);
    Py_VISIT(self->rp);
    Py_VISIT((PyObject *)self->state);
    Py_VISIT(self->counts);
    Py_VISIT(self->rps);
    Py_VISIT(self->states);
    return 0;
}

static int Hit_clear(Hit *self)
{
    Py_CLEAR(self->core);
    Py_CLEAR(self->site);
    Py_CLEAR(self->active);
    Py_CLEAR(self->general);
    Py_CLEAR(self->emulate);
    Py_CLEAR(self->rp);
    Py_CLEAR(self->state);
    Py_CLEAR(self->counts);
    Py_CLEAR(self->rps);
    Py_CLEAR(self->states);
    return 0;
}

static void Hit_dealloc(Hit *self)
{
    PyObject_GC_UnTrack(self);
    Hit_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Hit_address(PyObject *self, PyObject *noargs)
{
    (void)noargs;
    return PyLong_FromUnsignedLongLong((unsigned long long)(uintptr_t)self);
}

static PyObject *Hit_repr(Hit *self)
{
    char where[24];
    snprintf(where, sizeof where, "%#llx", self->addr);
    return PyUnicode_FromFormat("<native hit of %s at %s>",
                                self->rp != NULL ? "a kretprobe entry" : "a kprobe site", where);
}

static PyMethodDef Hit_methods[] = {
    {"address", (PyCFunction)Hit_address, METH_NOARGS,
     "address() -> the object's address: hit_code's user data (keep the object alive)"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Hit_members[] = {
    {"stale", T_BOOL, offsetof(Hit, stale), 0, "the site is served by another handler now"},
    {"hits", T_ULONGLONG, offsetof(Hit, hits), 0, "hits taken"},
    {"base", T_ULONGLONG, offsetof(Hit, base), 0, "hits at the optimizer's last look"},
    {"promote_at", T_ULONGLONG, offsetof(Hit, promote_at), 0,
     "an int3 site wanting a hook calls core.on_hot(site) at this many hits (0: never)"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject HitType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "probes._native.Hit",
    .tp_doc = "Hit(core, site, active, general, addr, optimized, kind, next, boost, push_reg, "
              "emulate, rp, counts): the native hit path of one site; hit(addr) takes an int3 hit.",
    .tp_basicsize = sizeof(Hit),
    .tp_vectorcall_offset = offsetof(Hit, vectorcall),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_call = PyVectorcall_Call,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Hit_init,
    .tp_traverse = (traverseproc)Hit_traverse,
    .tp_clear = (inquiry)Hit_clear,
    .tp_dealloc = (destructor)Hit_dealloc,
    .tp_methods = Hit_methods,
    .tp_members = Hit_members,
    .tp_repr = (reprfunc)Hit_repr,
};

/* === native actions ======================================================================= */
/* Count: a pre_handler that counts hits (funccount). Called from Python it adds
 * one; at a site whose handlers are all Counts the hit path adds without the GIL. */
static PyObject *Count_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                  PyObject *kwnames)
{
    (void)args; (void)nargsf; (void)kwnames;
    ((Count *)self)->value++;
    return PyLong_FromLong(0);
}

static PyObject *Count_call(PyObject *self, PyObject *args, PyObject *kwds)
{
    (void)args; (void)kwds;
    return Count_vectorcall(self, NULL, 0, NULL);
}

static PyMemberDef Count_members[] = {
    {"value", T_ULONGLONG, offsetof(Count, value), 0, "hits counted"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject CountType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "probes._native.Count",
    .tp_doc = "Count(): a kprobe pre_handler that counts hits in C (value).",
    .tp_basicsize = sizeof(Count),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_call = Count_call,
    .tp_members = Count_members,
};

/* Latency: a kretprobe's entry_handler/handler pair (funclatency): the entry
 * stamps a time into ri.data, the return adds log2(duration // div) to a
 * histogram. With the host clock the hit paths do both without the GIL; with
 * a Python clock (now(): the virtual clock) they run with it. */
#define NSLOTS 65

enum { CLOCK_HOST = 0, CLOCK_VIRTUAL = 1, CLOCK_PY = 2 };

struct Latency {
    PyObject_HEAD
    PyObject *now;                 /* None: the host's clock; "virtual"; else now() -> ns */
    int clock;                     /* CLOCK_HOST, CLOCK_VIRTUAL (the hitting machine's), CLOCK_PY */
    unsigned long long div;
    unsigned long long slots[NSLOTS], count, total, missed;
};

static int latency_pure(Latency *lat)
{
    return lat->clock != CLOCK_PY;
}

/* Machine.now() of the core's machine, at a hit. */
static unsigned long long core_vnow(Core *c)
{
    unsigned long long t = (unsigned long long)*c->vclock;
    if (*c->counting && c->counter != NULL)
        t += *c->counter;
    return t;
}

static unsigned long long mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (unsigned long long)ts.tv_sec * 1000000000ULL + (unsigned long long)ts.tv_nsec;
}

/* The host's monotonic clock, in ns. clock_gettime costs about 21 ns a call here
 * and a timed call reads it twice; with an invariant TSC (constant_tsc and
 * nonstop_tsc in /proc/cpuinfo, what the kernel's own clocksource uses) the
 * clock is the TSC scaled to CLOCK_MONOTONIC's rate, measured once (9 ns). */
#if defined(__x86_64__)
#include <x86intrin.h>
static int tsc_state;                      /* 0: not measured, 1: in use, -1: not usable */
static unsigned long long tsc_mult;         /* ns = ticks * tsc_mult >> 32 */

static void tsc_calibrate(void)
{
    tsc_state = -1;
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f == NULL)
        return;
    char line[4096];
    int constant = 0, nonstop = 0;
    while (fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "flags", 5) == 0) {
            constant = strstr(line, " constant_tsc") != NULL;
            nonstop = strstr(line, " nonstop_tsc") != NULL;
            break;
        }
    fclose(f);
    if (!constant || !nonstop)
        return;
    unsigned long long m0 = mono_ns(), t0 = __rdtsc(), m1, t1;
    do {                                   /* 0.2 ms: the rate to about 1 part in 10^4 */
        m1 = mono_ns();
        t1 = __rdtsc();
    } while (m1 - m0 < 200000ULL);
    if (t1 <= t0)
        return;
    tsc_mult = (unsigned long long)(((unsigned __int128)(m1 - m0) << 32) / (t1 - t0));
    tsc_state = 1;
}

/* The host clock in raw units (TSC ticks, or ns without an invariant TSC): a
 * call's stamps are raw and only its duration is scaled (raw_ns). */
static inline unsigned long long host_raw(void)
{
    return tsc_state == 1 ? __rdtsc() : mono_ns();
}

static inline unsigned long long raw_ns(unsigned long long delta)
{
    return tsc_state == 1 ? (unsigned long long)(((unsigned __int128)delta * tsc_mult) >> 32) : delta;
}
#else
static void tsc_calibrate(void) {}
static inline unsigned long long host_raw(void)
{
    return mono_ns();
}

static inline unsigned long long raw_ns(unsigned long long delta)
{
    return delta;
}
#endif

static void latency_stamp(Instance *ri, unsigned long long t)
{
    if (ri->data_ptr != NULL && ri->data_len >= 8)
        memcpy(ri->data_ptr, &t, 8);
}

/* t and the stamp are raw host units for the host clock, ns for a Python one. */
static void latency_record(Latency *lat, Instance *ri, unsigned long long t)
{
    unsigned long long t0;
    if (ri->data_ptr == NULL || ri->data_len < 8) {
        lat->missed++;
        return;
    }
    memcpy(&t0, ri->data_ptr, 8);
    unsigned long long ns = t >= t0 ? t - t0 : 0;
    if (lat->clock == CLOCK_HOST)
        ns = raw_ns(ns);
    unsigned long long v = lat->div == 1 ? ns : ns / lat->div;
    int slot = v ? 64 - __builtin_clzll(v) : 1;      /* bcc's bpf_log2l: 0 and 1 share 1 */
    lat->slots[slot]++;
    lat->count++;
    lat->total += ns;
}

static void latency_enter(Latency *lat, Instance *ri, void *core)
{
    latency_stamp(ri, lat->clock == CLOCK_HOST ? host_raw() : core_vnow((Core *)core));
}

static void latency_leave(Latency *lat, Instance *ri, void *core)
{
    latency_record(lat, ri, lat->clock == CLOCK_HOST ? host_raw() : core_vnow((Core *)core));
}

/* now() of a Latency with the GIL, called as a handler: -1 with an error set. The
 * virtual clock is the machine's that hit (regs.machine.now()). */
static int latency_now(Latency *lat, PyObject *regs, unsigned long long *t)
{
    if (lat->clock == CLOCK_HOST) {
        *t = host_raw();
        return 0;
    }
    PyObject *r;
    if (lat->clock == CLOCK_VIRTUAL) {
        PyObject *m = PyObject_GetAttrString(regs, "machine");
        if (m == NULL)
            return -1;
        r = PyObject_CallMethod(m, "now", NULL);
        Py_DECREF(m);
    } else {
        r = PyObject_CallNoArgs(lat->now);
    }
    if (r == NULL)
        return -1;
    *t = PyLong_AsUnsignedLongLong(r);
    Py_DECREF(r);
    return PyErr_Occurred() ? -1 : 0;
}

static PyObject *view_call(PyObject *self, PyObject *args, PyObject *kwds, int entry)
{
    Latency *lat = (Latency *)((View *)self)->act;
    PyObject *ri, *regs;
    if (kwds != NULL || !PyArg_ParseTuple(args, "OO", &ri, &regs))
        return NULL;
    if (!PyObject_TypeCheck(ri, &InstanceType)) {
        PyErr_SetString(PyExc_TypeError, "a Latency handler takes (ri, regs)");
        return NULL;
    }
    unsigned long long t;
    if (latency_now(lat, regs, &t) < 0)
        return NULL;
    if (entry)
        latency_stamp((Instance *)ri, t);
    else
        latency_record(lat, (Instance *)ri, t);
    return PyLong_FromLong(0);
}

static PyObject *LatencyEntry_call(PyObject *self, PyObject *args, PyObject *kwds)
{
    return view_call(self, args, kwds, 1);
}

static PyObject *LatencyReturn_call(PyObject *self, PyObject *args, PyObject *kwds)
{
    return view_call(self, args, kwds, 0);
}

static int View_traverse(View *self, visitproc visit, void *arg)
{
    Py_VISIT(self->act);
    return 0;
}

static int View_clear(View *self)
{
    Py_CLEAR(self->act);
    return 0;
}

static void View_dealloc(View *self)
{
    PyObject_GC_UnTrack(self);
    View_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *view_of(PyObject *act, PyTypeObject *type)
{
    View *v = PyObject_GC_New(View, type);
    if (v == NULL)
        return NULL;
    v->act = Py_NewRef(act);
    PyObject_GC_Track(v);
    return (PyObject *)v;
}

static PyTypeObject LatencyEntryType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "probes._native.LatencyEntry",
    .tp_doc = "A Latency's entry_handler(ri, regs): stamps the time into ri.data.",
    .tp_basicsize = sizeof(View),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_call = LatencyEntry_call,
    .tp_traverse = (traverseproc)View_traverse,
    .tp_clear = (inquiry)View_clear,
    .tp_dealloc = (destructor)View_dealloc,
};

static PyTypeObject LatencyReturnType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "probes._native.LatencyReturn",
    .tp_doc = "A Latency's handler(ri, regs): adds the call's duration to the histogram.",
    .tp_basicsize = sizeof(View),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_call = LatencyReturn_call,
    .tp_traverse = (traverseproc)View_traverse,
    .tp_clear = (inquiry)View_clear,
    .tp_dealloc = (destructor)View_dealloc,
};

static int Latency_init(Latency *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"now", "div", NULL};
    PyObject *now = Py_None;
    unsigned long long div = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OK", kwlist, &now, &div))
        return -1;
    int virt = PyUnicode_Check(now) && PyUnicode_CompareWithASCIIString(now, "virtual") == 0;
    if (div == 0 || (now != Py_None && !virt && !PyCallable_Check(now))) {
        PyErr_SetString(PyExc_ValueError, "Latency(now=None, 'virtual' or a callable, div >= 1)");
        return -1;
    }
    self->clock = now == Py_None ? CLOCK_HOST : virt ? CLOCK_VIRTUAL : CLOCK_PY;
    if (now == Py_None && tsc_state == 0)
        tsc_calibrate();                   /* once, for the first Latency on the host clock */
    Py_XSETREF(self->now, Py_NewRef(now));
    self->div = div;
    memset(self->slots, 0, sizeof self->slots);
    self->count = self->total = self->missed = 0;
    return 0;
}

static PyObject *Latency_entry(Latency *self, void *closure)
{
    (void)closure;
    return view_of((PyObject *)self, &LatencyEntryType);
}

static PyObject *Latency_handler(Latency *self, void *closure)
{
    (void)closure;
    return view_of((PyObject *)self, &LatencyReturnType);
}

static PyObject *Latency_hist(Latency *self, void *closure)
{
    (void)closure;
    PyObject *d = PyDict_New();
    for (int i = 0; d != NULL && i < NSLOTS; i++) {
        if (!self->slots[i])
            continue;
        PyObject *k = PyLong_FromLong(i), *v = PyLong_FromUnsignedLongLong(self->slots[i]);
        if (k == NULL || v == NULL || PyDict_SetItem(d, k, v) < 0)
            Py_CLEAR(d);
        Py_XDECREF(k);
        Py_XDECREF(v);
    }
    return d;
}

static PyGetSetDef Latency_getset[] = {
    {"entry_handler", (getter)Latency_entry, NULL, "the kretprobe's entry_handler", NULL},
    {"handler", (getter)Latency_handler, NULL, "the kretprobe's handler", NULL},
    {"hist", (getter)Latency_hist, NULL, "{log2 slot: calls}", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Latency_members[] = {
    {"count", T_ULONGLONG, offsetof(Latency, count), READONLY, "calls timed"},
    {"total", T_ULONGLONG, offsetof(Latency, total), READONLY, "their total duration (ns)"},
    {"missed", T_ULONGLONG, offsetof(Latency, missed), READONLY, "returns with no stamp (data_size < 8)"},
    {"div", T_ULONGLONG, offsetof(Latency, div), READONLY, "the histogram's unit in ns"},
    {"now", T_OBJECT, offsetof(Latency, now), READONLY, "the clock (None: the host's)"},
    {NULL, 0, 0, 0, NULL},
};

static int Latency_traverse(Latency *self, visitproc visit, void *arg)
{
    Py_VISIT(self->now);
    return 0;
}

static int Latency_clear(Latency *self)
{
    Py_CLEAR(self->now);
    return 0;
}

static void Latency_dealloc(Latency *self)
{
    PyObject_GC_UnTrack(self);
    Latency_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject LatencyType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "probes._native.Latency",
    .tp_doc = "Latency(now=None, div=1): a log2 histogram of call durations in C; register "
              "Kretprobe(entry_handler=lat.entry_handler, handler=lat.handler, data_size=8).",
    .tp_basicsize = sizeof(Latency),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Latency_init,
    .tp_traverse = (traverseproc)Latency_traverse,
    .tp_clear = (inquiry)Latency_clear,
    .tp_dealloc = (destructor)Latency_dealloc,
    .tp_getset = Latency_getset,
    .tp_members = Latency_members,
};

/* === native trace events ==================================================================== */
#include "_trace.c"

static int act_pure(PyObject *act)
{
    return Py_TYPE(act) == &TraceType || latency_pure((Latency *)act);
}

/* === module ================================================================================ */
static PyObject *addresses(PyObject *self, PyObject *noargs)
{
    (void)self; (void)noargs;
    return Py_BuildValue("{s:K,s:K,s:K}",
                         "hit_code", (unsigned long long)(uintptr_t)hit_code,
                         "hit_trap", (unsigned long long)(uintptr_t)hit_trap,
                         "tramp_code", (unsigned long long)(uintptr_t)tramp_code);
}

static PyMethodDef methods[] = {
    {"addresses", addresses, METH_NOARGS,
     "addresses() -> {name: address} of the native hook callbacks."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "probes._native",
    "The probe hit paths in C (see probes/_native.c).", -1, methods,
};

#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL

PyMODINIT_FUNC PyInit__native(void)
{
    INTERN(s_handler, "handler");
    INTERN(s_rp_handler, "_handler");
    INTERN(s_gone, "gone");
    INTERN(s_pre_handler, "_pre_handler");
    INTERN(s_flags, "flags");
    INTERN(s_entry_handler, "_entry_handler");
    INTERN(s_prepare, "_prepare");
    INTERN(s_cut_at_hit, "_cut_at_hit");
    if ((mask64 = PyLong_FromUnsignedLongLong(~0ULL)) == NULL)
        return NULL;
    PyTypeObject *types[] = {&RegsType, &InstanceType, &StackType, &RpStateType, &CoreType,
                             &HitType, &CountType, &LatencyType, &LatencyEntryType,
                             &LatencyReturnType, &RingType, &TraceType, &TraceEntryType,
                             &TraceReturnType};
    const char *names[] = {"Regs", "Instance", "Stack", "RpState", "Core", "Hit", "Count",
                           "Latency", "LatencyEntry", "LatencyReturn", "Ring", "Trace",
                           "TraceEntry", "TraceReturn"};
    int ntypes = (int)(sizeof types / sizeof types[0]);
    for (int i = 0; i < ntypes; i++)
        if (PyType_Ready(types[i]) < 0)
            return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    for (int i = 0; i < ntypes; i++) {
        Py_INCREF(types[i]);
        if (PyModule_AddObject(m, names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(types[i]);
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
