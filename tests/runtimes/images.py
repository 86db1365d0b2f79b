"""What the podman and containerd tests share: a busybox test image and an HTTP check."""
from __future__ import annotations

import os
import shutil
import subprocess
import time

IMAGE = "localhost/test-bb:latest"
CMD = 'CMD ["/bin/httpd","-f","-p","80","-h","/www"]'


def busybox_rootfs_tar(tmp) -> str:
    """A root filesystem from Debian's busybox-static, serving /www/index.html (no registry)."""
    rootfs = tmp / "rootfs"
    for d in ("bin", "www", "tmp", "proc", "sys", "dev", "etc"):
        (rootfs / d).mkdir(parents=True)
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    for applet in ("sh", "httpd", "nc", "ping", "ip", "sleep", "cat", "echo"):
        os.symlink("busybox", rootfs / "bin" / applet)
    (rootfs / "www" / "index.html").write_text("hello-from-pod\n")
    tar = str(tmp / "rootfs.tar")
    subprocess.run(["tar", "-C", str(rootfs), "-cf", tar, "."], check=True)
    return tar


HTTP_GET = ("import socket,sys\ntry:\n s=socket.create_connection((sys.argv[1],int(sys.argv[2])),3)\n"
            " s.sendall(b'GET /index.html HTTP/1.0\\r\\n\\r\\n'); data=b''\n"
            " while True:\n  chunk=s.recv(4096)\n  if not chunk: break\n  data+=chunk\n print(data.decode())\n"
            "except OSError as e: print('ERR',e)")


def http_get(ns, host: str, port: int) -> bool:
    """True when the pod's page comes back (read to EOF); retried while the server starts."""
    for _ in range(10):
        if "hello-from-pod" in ns.run("python3", "-c", HTTP_GET, host, str(port), check=False).stdout:
            return True
        time.sleep(0.3)
    return False
