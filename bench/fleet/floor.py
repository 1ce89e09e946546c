# The fleet benchmark's floor: the same workload done by hand in one python3
# process per node (`ssh NODE python3 -c SCRIPT`, all nodes at once). The
# bench prepends `WORKLOAD = {...}`. Like PyDebianAdmin, a file whose content
# differs is written to a temporary file, flushed and renamed over; a file
# whose content and mode are right is left alone.
import os
import stat


def ensure_dir(path, mode):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        os.makedirs(path)
        st = os.stat(path)
    if stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


def ensure_file(path, data, mode):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    same = False
    if st is not None and stat.S_ISREG(st.st_mode) and st.st_size == len(data):
        with open(path, "rb") as handle:
            same = handle.read() == data
    if not same:
        tmp = f"{path}.floor-tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.rename(tmp, path)
    elif stat.S_IMODE(st.st_mode) != mode:
        os.chmod(path, mode)


ensure_dir(WORKLOAD["dir"], int(WORKLOAD["dir_mode"], 8))
for item in WORKLOAD["files"]:
    ensure_file(os.path.join(WORKLOAD["dir"], item["name"]), item["content"].encode(), int(item["mode"], 8))
