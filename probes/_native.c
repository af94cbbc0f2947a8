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
#include <stdint.h>
#include <string.h>

typedef struct uc_struct uc_engine;
typedef int (*uc_reg_rw_t)(uc_engine *uc, int regid, void *value);

enum { R_RSP = 4, R_RIP = 16, NR_FAST = 17, K_EFLAGS = -1 };
enum { STEP_NONE = 0, STEP_NOP = 1, STEP_PUSH = 2, STEP_BOOST = 3, STEP_PY = 4 };
#define NOT_FIRING 0x3     /* KPROBE_FLAG_GONE | KPROBE_FLAG_DISABLED */

static PyObject *s_handler, *s_gone, *s_pre_handler, *s_flags, *s_current_task, *s_sched,
    *s_preempt_point, *s_free, *s_entry_handler, *s_gen, *s_nmissed, *s_prepare, *mask64;

/* --- errors ------------------------------------------------------------------------- */
static PyObject *take_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL)
        return NULL;
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

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

/* === Instance ========================================================================= */
typedef struct {
    PyObject_HEAD
    PyObject *rp, *data, *task;
    unsigned long long ret_addr, fp;
    long long gen;
    char shared;
} Instance;

static int Instance_init(Instance *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"rp", "data", "gen", NULL};
    PyObject *rp, *data;
    long long gen;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOL", kwlist, &rp, &data, &gen))
        return -1;
    Py_XSETREF(self->rp, Py_NewRef(rp));
    Py_XSETREF(self->data, Py_NewRef(data));
    Py_CLEAR(self->task);
    self->ret_addr = self->fp = 0;
    self->gen = gen;
    self->shared = 0;
    return 0;
}

static PyMemberDef Instance_members[] = {
    {"rp", T_OBJECT, offsetof(Instance, rp), 0, "the kretprobe"},
    {"data", T_OBJECT, offsetof(Instance, data), 0, "data_size private bytes"},
    {"task", T_OBJECT, offsetof(Instance, task), 0, "the task that made the call (None: free)"},
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
    Py_VISIT(self->task);
    return 0;
}

static int Instance_clear(Instance *self)
{
    Py_CLEAR(self->rp);
    Py_CLEAR(self->data);
    Py_CLEAR(self->task);
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
};

/* === Core ============================================================================= */
typedef struct {
    PyObject_HEAD
    char running;              /* kprobe_running() */
    Regs *regs;
    PyObject *m;               /* the Machine */
    PyObject *abort;           /* m.abort(exc): a bug of the hit path */
    PyObject *failed;          /* mgr.handler_failed(exc, fn): a handler raised */
    PyObject *inflight;        /* dict: task -> list of Instance (outermost first) */
    PyObject *span;            /* span(addr) -> (start, end, ptr, keep) of writable memory, or None */
    PyObject *tramp_general;   /* Rethook._trampoline_general(slot) */
    PyObject *mgr;             /* the KprobeManager (rp._prepare's argument) */
    unsigned long long tramp;  /* the trampoline's address */
    uint64_t *cell;            /* host address of the trampoline's cell */
    PyObject *cell_keep;
    int rip_id;
    unsigned long long layout; /* bumped when memory is unmapped or reprotected */
    /* the last task seen and its in-flight list */
    PyObject *c_task, *c_stack;
    /* the writable span last used: [s_start, s_end) at host s_ptr */
    unsigned long long s_start, s_end;
    char *s_ptr;
    PyObject *s_keep;
} Core;

static void core_forget_span(Core *c)
{
    c->s_start = c->s_end = 0;
    c->s_ptr = NULL;
    Py_CLEAR(c->s_keep);
}

/* Host address of the 8 bytes at addr when they are in writable guest memory,
 * else NULL (no error) or NULL with an error set. */
static char *core_stack_word(Core *c, unsigned long long addr)
{
    if (addr >= c->s_start && addr + 8 <= c->s_end && addr + 8 > addr)
        return c->s_ptr + (addr - c->s_start);
    PyObject *r = PyObject_CallFunction(c->span, "K", addr);
    if (r == NULL)
        return NULL;
    if (r == Py_None) {
        Py_DECREF(r);
        return NULL;
    }
    unsigned long long start, end, ptr;
    PyObject *keep;
    if (!PyArg_ParseTuple(r, "KKKO", &start, &end, &ptr, &keep)) {
        Py_DECREF(r);
        return NULL;
    }
    core_forget_span(c);
    c->s_start = start;
    c->s_end = end;
    c->s_ptr = (char *)(uintptr_t)ptr;
    c->s_keep = Py_NewRef(keep);
    Py_DECREF(r);
    if (addr >= c->s_start && addr + 8 <= c->s_end && addr + 8 > addr)
        return c->s_ptr + (addr - c->s_start);
    return NULL;
}

/* The current task's in-flight list (borrowed), NULL if it has none (no error),
 * NULL with an error set on failure. */
static PyObject *core_stack_of(Core *c, PyObject **task_out)
{
    PyObject *task = PyObject_GetAttr(c->m, s_current_task);
    if (task == NULL)
        return NULL;
    *task_out = task;      /* a new reference, for the caller */
    if (task == c->c_task)
        return c->c_stack;
    PyObject *stack = PyDict_GetItemWithError(c->inflight, task);
    if (stack == NULL || !PyList_CheckExact(stack))
        return NULL;
    Py_XSETREF(c->c_task, Py_NewRef(task));
    Py_XSETREF(c->c_stack, Py_NewRef(stack));
    return stack;
}

static int core_preempt(Core *c)
{
    PyObject *sched = PyObject_GetAttr(c->m, s_sched);
    if (sched == NULL)
        return -1;
    int on = sched != Py_None;
    Py_DECREF(sched);
    if (!on)
        return 0;
    PyObject *r = PyObject_CallMethodNoArgs(c->m, s_preempt_point);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

static void core_set_pc(Core *c, uint64_t pc)
{
    /* Inside a code hook RIP is written through the API (it ends the block). */
    c->regs->reg_write(c->regs->uch, c->rip_id, &pc);
}

/* list.pop() of a non-empty list (a new reference). */
static PyObject *list_pop(PyObject *list)
{
    Py_ssize_t n = PyList_GET_SIZE(list);
    PyObject *item = Py_NewRef(PyList_GET_ITEM(list, n - 1));
    if (PyList_SetSlice(list, n - 1, n, NULL) < 0) {
        Py_DECREF(item);
        return NULL;
    }
    return item;
}

static int Core_init(Core *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"machine", "mgr", "regs", "inflight", "span", "tramp_general",
                             "abort", "failed", "tramp", "cell", "cell_keep", "rip_id", NULL};
    PyObject *m, *mgr, *regs, *inflight, *span, *general, *abort, *failed, *keep;
    unsigned long long tramp, cell;
    int rip_id;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO!O!OOOOKKOi", kwlist, &m, &mgr, &RegsType,
                                     &regs, &PyDict_Type, &inflight, &span, &general, &abort,
                                     &failed, &tramp, &cell, &keep, &rip_id))
        return -1;
    if (!cell) {
        PyErr_SetString(PyExc_ValueError, "Core: null trampoline cell");
        return -1;
    }
    Py_XSETREF(self->m, Py_NewRef(m));
    Py_XSETREF(self->mgr, Py_NewRef(mgr));
    Py_XSETREF(self->regs, (Regs *)Py_NewRef(regs));
    Py_XSETREF(self->inflight, Py_NewRef(inflight));
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

static PyObject *Core_invalidate(Core *self, PyObject *noargs)
{
    (void)noargs;
    core_forget_span(self);
    self->layout++;
    Py_RETURN_NONE;
}

static PyObject *Core_forget_tasks(Core *self, PyObject *noargs)
{
    (void)noargs;
    Py_CLEAR(self->c_task);
    Py_CLEAR(self->c_stack);
    Py_RETURN_NONE;
}

static PyMemberDef Core_members[] = {
    {"running", T_BOOL, offsetof(Core, running), 0, "kprobe_running()"},
    {"regs", T_OBJECT, offsetof(Core, regs), READONLY, "the pt_regs handlers get"},
    {NULL, 0, 0, 0, NULL},
};

static int Core_traverse(Core *self, visitproc visit, void *arg)
{
    Py_VISIT(self->regs);
    Py_VISIT(self->m);
    Py_VISIT(self->mgr);
    Py_VISIT(self->abort);
    Py_VISIT(self->failed);
    Py_VISIT(self->inflight);
    Py_VISIT(self->span);
    Py_VISIT(self->tramp_general);
    Py_VISIT(self->cell_keep);
    Py_VISIT(self->c_task);
    Py_VISIT(self->c_stack);
    Py_VISIT(self->s_keep);
    return 0;
}

static int Core_clear(Core *self)
{
    Py_CLEAR(self->regs);
    Py_CLEAR(self->m);
    Py_CLEAR(self->mgr);
    Py_CLEAR(self->abort);
    Py_CLEAR(self->failed);
    Py_CLEAR(self->inflight);
    Py_CLEAR(self->span);
    Py_CLEAR(self->tramp_general);
    Py_CLEAR(self->cell_keep);
    Py_CLEAR(self->c_task);
    Py_CLEAR(self->c_stack);
    core_forget_span(self);
    return 0;
}

static void Core_dealloc(Core *self)
{
    PyObject_GC_UnTrack(self);
    Core_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Core_address(PyObject *self, PyObject *noargs)
{
    (void)noargs;
    return PyLong_FromUnsignedLongLong((unsigned long long)(uintptr_t)self);
}

static PyMethodDef Core_methods_all[] = {
    {"invalidate", (PyCFunction)Core_invalidate, METH_NOARGS,
     "invalidate(): memory was unmapped or reprotected: forget the cached span"},
    {"forget_tasks", (PyCFunction)Core_forget_tasks, METH_NOARGS,
     "forget_tasks(): forget the cached task and its in-flight list"},
    {"address", (PyCFunction)Core_address, METH_NOARGS,
     "address() -> the object's address: tramp_code's user data (keep the object alive)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "probes._native.Core",
    .tp_doc = "Core(machine, mgr, regs, inflight, span, tramp_general, abort, failed, tramp, "
              "cell, cell_keep, rip_id): one probe manager's state for the native hit paths.",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Core_init,
    .tp_traverse = (traverseproc)Core_traverse,
    .tp_clear = (inquiry)Core_clear,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_methods = Core_methods_all,
    .tp_members = Core_members,
};

/* === the trampoline ====================================================================== */
/* rp.nmissed += 1 */
static int bump(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    PyObject *one = PyLong_FromLong(1);
    PyObject *w = one != NULL ? PyNumber_Add(v, one) : NULL;
    Py_XDECREF(one);
    Py_DECREF(v);
    if (w == NULL)
        return -1;
    int rc = PyObject_SetAttr(obj, name, w);
    Py_DECREF(w);
    return rc;
}

/* ri back on rp's free list when it is of rp's current registration. */
static int give_back(Instance *ri, int current)
{
    Py_CLEAR(ri->task);
    if (!current)
        return 0;
    PyObject *free = PyObject_GetAttr(ri->rp, s_free);
    if (free == NULL)
        return -1;
    int rc = PyList_Append(free, (PyObject *)ri);
    Py_DECREF(free);
    return rc;
}

static int tramp_general(Core *c, unsigned long long slot)
{
    PyObject *r = PyObject_CallFunction(c->tramp_general, "K", slot);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* The return of a hijacked call (Rethook._trampoline_hook's fast path). */
static int tramp_run(Core *c)
{
    Regs *regs = c->regs;
    unsigned long long slot = regs->gpr[R_RSP] - 8;
    PyObject *task = NULL;
    PyObject *stack = core_stack_of(c, &task);
    Py_XDECREF(task);
    if (stack == NULL && PyErr_Occurred())
        return -1;
    if (stack == NULL || PyList_GET_SIZE(stack) == 0)
        return tramp_general(c, slot);
    PyObject *top = PyList_GET_ITEM(stack, PyList_GET_SIZE(stack) - 1);
    if (Py_TYPE(top) != &InstanceType && !PyObject_TypeCheck(top, &InstanceType))
        return tramp_general(c, slot);
    Instance *ri = (Instance *)top;
    if (ri->fp != slot || ri->shared)
        return tramp_general(c, slot);
    ri = (Instance *)list_pop(stack);
    if (ri == NULL)
        return -1;
    int rc = -1;
    PyObject *rp = Py_NewRef(ri->rp), *handler = NULL;
    unsigned long long real = ri->ret_addr;
    PyObject *gen = PyObject_GetAttr(rp, s_gen);
    if (gen == NULL)
        goto out;
    long long g = PyLong_AsLongLong(gen);
    Py_DECREF(gen);
    if (g == -1 && PyErr_Occurred())
        goto out;
    int current = ri->gen == g;       /* changes when rp is unregistered: then no handler */
    handler = PyObject_GetAttr(rp, s_handler);
    if (handler == NULL)
        goto out;
    if (c->running) {
        if (bump(rp, s_nmissed) < 0)
            goto out;
    } else if (current && handler != Py_None) {
        c->running = 1;
        regs->rip = real;
        regs_discard(regs);
        PyObject *args[2] = {(PyObject *)ri, (PyObject *)regs};
        PyObject *r = PyObject_Vectorcall(handler, args, 2, NULL);
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
    Py_DECREF(rp);
    Py_DECREF(ri);
    return rc;
}

static void tramp_code(uc_engine *uc, uint64_t address, uint32_t size, void *user)
{
    (void)uc; (void)address; (void)size;
    Core *c = (Core *)user;
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
    PyObject *site;        /* the _Site: .handler (still this?), .gone */
    PyObject *active;      /* tuple of the enabled Kprobes */
    PyObject *general;     /* the Python hit path, general(addr) */
    PyObject *emulate;     /* the emulate op (STEP_PY), or None */
    PyObject *rp;          /* the Kretprobe of a kretprobe entry site, or NULL */
    unsigned long long addr, next, boost;
    int kind, push_reg;
    char optimized;
} Hit;

static PyTypeObject HitType;
static int hit_run(Hit *h);

static int call_general(Hit *h)
{
    PyObject *r = PyObject_CallFunction(h->general, "K", h->addr);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* The instruction at the probe, out of the way (int3 sites): RIP past it. */
static int hit_step(Hit *h)
{
    Core *c = h->core;
    uint64_t *gpr = c->regs->gpr;
    switch (h->kind) {
    case STEP_NOP:
        gpr[R_RIP] = h->next;
        return 0;
    case STEP_BOOST:
        gpr[R_RIP] = h->boost;
        return 0;
    case STEP_PUSH: {
        unsigned long long sp = gpr[R_RSP] - 8;
        char *p = core_stack_word(c, sp);
        if (p != NULL) {
            uint64_t v = gpr[h->push_reg];    /* push rsp stores the value before the decrement */
            memcpy(p, &v, 8);
            gpr[R_RSP] = sp;
            gpr[R_RIP] = h->next;
            return 0;
        }
        if (PyErr_Occurred())
            return -1;
        break;       /* not plainly writable: the Python op decides (it may fault) */
    }
    case STEP_PY:
        break;
    default:
        return 0;
    }
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
        PyObject *args[2] = {kp, (PyObject *)regs};
        PyObject *r = PyObject_Vectorcall(pre, args, 2, NULL);
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

/* pre_handler_kretprobe + arch_prepare_kretprobe + the step, for a site whose
 * only enabled probe is a kretprobe's (Rethook.entry_fast_path). */
static int hit_kretprobe(Hit *h)
{
    Core *c = h->core;
    Regs *regs = c->regs;
    uint64_t *gpr = regs->gpr;
    int rc = -1;
    PyObject *task = NULL, *free = NULL, *entry = NULL;
    Instance *ri = NULL;
    PyObject *stack = core_stack_of(c, &task);
    if (stack == NULL) {
        if (PyErr_Occurred())
            goto out;
        rc = call_general(h);        /* the task's first call: the general path */
        goto out;
    }
    free = PyObject_GetAttr(h->rp, s_free);
    if (free == NULL)
        goto out;
    unsigned long long sp = gpr[R_RSP];
    Py_ssize_t depth = PyList_GET_SIZE(stack);
    /* Uncommon shapes go the general way: a miss or a nested hit, stale frames
     * below this one, a return address outside writable memory. */
    if (c->running || !PyList_CheckExact(free) || PyList_GET_SIZE(free) == 0
        || (depth && ((Instance *)PyList_GET_ITEM(stack, depth - 1))->fp <= sp)) {
        rc = call_general(h);
        goto out;
    }
    if (!PyObject_TypeCheck(PyList_GET_ITEM(free, PyList_GET_SIZE(free) - 1), &InstanceType)) {
        rc = call_general(h);
        goto out;
    }
    char *slot = core_stack_word(c, sp);
    if (slot == NULL) {
        if (PyErr_Occurred())
            goto out;
        rc = call_general(h);
        goto out;
    }
    ri = (Instance *)list_pop(free);
    if (ri == NULL)
        goto out;
    Py_XSETREF(ri->task, Py_NewRef(task));
    int hijack = 1;
    entry = PyObject_GetAttr(h->rp, s_entry_handler);
    if (entry == NULL)
        goto out;
    if (entry != Py_None) {
        c->running = 1;
        regs->rip = h->addr;
        regs_discard(regs);
        PyObject *args[2] = {(PyObject *)ri, (PyObject *)regs};
        PyObject *r = PyObject_Vectorcall(entry, args, 2, NULL);
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
                    if (!skip) {
                        PyObject *p = PyObject_CallMethodObjArgs(h->rp, s_prepare, c->mgr,
                                                                 (PyObject *)ri, (PyObject *)regs,
                                                                 NULL);
                        if (p == NULL)
                            goto out;
                        Py_DECREF(p);
                    }
                }
            }
        }
        c->running = 0;
        if (skip) {                  /* the instance goes back: no return handler */
            Py_CLEAR(ri->task);
            if (PyList_Append(free, (PyObject *)ri) < 0)
                goto out;
            hijack = 0;
        }
        if (hijack) {                /* the handler may have unmapped or reprotected it */
            slot = core_stack_word(c, sp);
            if (slot == NULL) {
                if (PyErr_Occurred())
                    goto out;
                hijack = 0;
                PyObject *p = PyObject_CallMethodObjArgs(h->rp, s_prepare, c->mgr,
                                                         (PyObject *)ri, (PyObject *)regs, NULL);
                if (p == NULL)
                    goto out;
                Py_DECREF(p);
            }
        }
    }
    if (hijack) {
        uint64_t ret;
        memcpy(&ret, slot, 8);
        ri->ret_addr = ret;
        ri->fp = sp;
        ri->shared = 0;
        uint64_t t = c->tramp;
        memcpy(slot, &t, 8);
        if (PyList_Append(stack, (PyObject *)ri) < 0)
            goto out;
    }
    if (!h->optimized && hit_step(h) < 0)
        goto out;
    rc = core_preempt(c);
out:
    Py_XDECREF(entry);
    Py_XDECREF((PyObject *)ri);
    Py_XDECREF(free);
    Py_XDECREF(task);
    return rc;
}

static int hit_run(Hit *h)
{
    /* Re-served during a run (probes._core._serve): hand the hit on. */
    PyObject *now = PyObject_GetAttr(h->site, s_handler);
    if (now == NULL)
        return -1;
    Py_DECREF(now);            /* the site holds it */
    if (now != (PyObject *)h) {
        if (now == Py_None)
            return 0;
        if (Py_TYPE(now) == &HitType)
            return hit_run((Hit *)now);
        PyObject *r = h->optimized ? PyObject_CallFunction(now, "OKIO", Py_None, h->addr, 0, Py_None)
                                   : PyObject_CallFunction(now, "K", h->addr);
        Py_XDECREF(r);
        return r == NULL ? -1 : 0;
    }
    return h->rp != NULL ? hit_kretprobe(h) : hit_kprobe(h);
}

static PyObject *Hit_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                PyObject *kwnames)
{
    (void)args; (void)nargsf; (void)kwnames;     /* the address is known */
    Hit *h = (Hit *)self;
    Py_INCREF(h);
    Core *c = (Core *)Py_NewRef(h->core);
    if (hit_run(h) < 0)
        hand_over(c->abort, NULL);
    Py_DECREF(c);
    Py_DECREF(h);
    Py_RETURN_NONE;
}

static void hit_code(uc_engine *uc, uint64_t address, uint32_t size, void *user)
{
    (void)uc; (void)address; (void)size;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *r = Hit_vectorcall((PyObject *)user, NULL, 0, NULL);
    Py_XDECREF(r);
    PyGILState_Release(gil);
}

static int Hit_init(Hit *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"core", "site", "active", "general", "addr", "optimized", "kind",
                             "next", "boost", "push_reg", "emulate", "rp", NULL};
    PyObject *core, *site, *active, *general, *emulate, *rp;
    unsigned long long addr, next, boost;
    int optimized, kind, push_reg;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OO!OKpiKKiOO", kwlist, &CoreType, &core, &site,
                                     &PyTuple_Type, &active, &general, &addr, &optimized, &kind,
                                     &next, &boost, &push_reg, &emulate, &rp))
        return -1;
    if (kind < STEP_NONE || kind > STEP_PY || (kind == STEP_PUSH && (push_reg < 0 || push_reg >= R_RIP))
        || ((kind == STEP_PY || kind == STEP_PUSH) && !PyCallable_Check(emulate))
        || (!optimized && kind == STEP_NONE)) {
        PyErr_SetString(PyExc_ValueError, "Hit: inconsistent step");
        return -1;
    }
    Py_XSETREF(self->core, (Core *)Py_NewRef(core));
    Py_XSETREF(self->site, Py_NewRef(site));
    Py_XSETREF(self->active, Py_NewRef(active));
    Py_XSETREF(self->general, Py_NewRef(general));
    Py_XSETREF(self->emulate, Py_NewRef(emulate));
    Py_XSETREF(self->rp, rp == Py_None ? NULL : Py_NewRef(rp));
    self->addr = addr;
    self->next = next;
    self->boost = boost;
    self->kind = kind;
    self->push_reg = push_reg;
    self->optimized = (char)optimized;
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

static PyTypeObject HitType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "probes._native.Hit",
    .tp_doc = "Hit(core, site, active, general, addr, optimized, kind, next, boost, push_reg, "
              "emulate, rp): the native hit path of one site; hit(addr) takes an int3 hit.",
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
    .tp_repr = (reprfunc)Hit_repr,
};

/* === module ================================================================================ */
static PyObject *addresses(PyObject *self, PyObject *noargs)
{
    (void)self; (void)noargs;
    return Py_BuildValue("{s:K,s:K}",
                         "hit_code", (unsigned long long)(uintptr_t)hit_code,
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
    INTERN(s_gone, "gone");
    INTERN(s_pre_handler, "pre_handler");
    INTERN(s_flags, "flags");
    INTERN(s_current_task, "current_task");
    INTERN(s_sched, "sched");
    INTERN(s_preempt_point, "preempt_point");
    INTERN(s_free, "_free");
    INTERN(s_entry_handler, "entry_handler");
    INTERN(s_gen, "_gen");
    INTERN(s_nmissed, "nmissed");
    INTERN(s_prepare, "_prepare");
    if ((mask64 = PyLong_FromUnsignedLongLong(~0ULL)) == NULL)
        return NULL;
    PyTypeObject *types[] = {&RegsType, &InstanceType, &CoreType, &HitType};
    const char *names[] = {"Regs", "Instance", "Core", "Hit"};
    for (int i = 0; i < 4; i++)
        if (PyType_Ready(types[i]) < 0)
            return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    for (int i = 0; i < 4; i++) {
        Py_INCREF(types[i]);
        if (PyModule_AddObject(m, names[i], (PyObject *)types[i]) < 0) {
            Py_DECREF(types[i]);
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
