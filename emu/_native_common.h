/* What the two native modules (emu/_native.c, probes/_native.c) share. */
#ifndef KPE_NATIVE_COMMON_H
#define KPE_NATIVE_COMMON_H

#include <Python.h>

/* The pending exception as one object (PyErr_GetRaisedException before 3.12),
 * or NULL when none is set: callbacks hand it on to Python (Machine.abort). */
static inline PyObject *take_exception(void)
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

#endif
