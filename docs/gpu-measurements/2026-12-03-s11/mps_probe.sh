#!/usr/bin/env bash
# What the real MPS control daemon's pipe and answers say while it quits (call 2), then the
# sweep's own start/stop (experiments/sweep/mps.py) twice in a row, each with a CUDA client.
export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-probe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-probe-log
mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
t0=$(date +%s.%N)
ts() { python3 -c "print(f'{$(date +%s.%N) - $t0:6.2f} s')"; }
ask() { out=$(echo get_server_list | timeout 3 nvidia-cuda-mps-control 2>&1); echo "  ask: rc=$? [$out]"; }
state() { echo "$(ts) pipe: [$(ls $CUDA_MPS_PIPE_DIRECTORY | tr '\n' ' ')] daemons: $(pgrep -fc 'nvidia-cuda-mps-control -d')"; ask; }
echo "== before"; state
nvidia-cuda-mps-control -d; echo "-d rc=$?"; sleep 0.5
echo "== started"; state
python3 -c "import torch; print('a client:', torch.ones(1, device='cuda').item())"
echo "== after a client"; state
echo quit | nvidia-cuda-mps-control; echo "quit rc=$?"
for i in $(seq 1 16); do state; (( $(pgrep -fc 'nvidia-cuda-mps-control -d') == 0 )) && break; sleep 0.5; done
echo "== after it exited"; state
echo "== the sweep's mps_daemon twice in a row"
python3 - <<'PY'
import subprocess, time
from experiments.sweep import mps
client = "import torch; torch.ones(1, device='cuda'); print('   client ran')"
for i in range(2):
    t = time.time()
    with mps.mps_daemon(True) as note:
        print(i, note, "| running:", mps.running(), flush=True)
        subprocess.run(["python3", "-c", client], check=False)
        print("   servers:", mps._control(text="get_server_list\n").stdout.split(), flush=True)
    print(i, f"stopped {time.time() - t:.1f} s after start; running after: {mps.running()}", flush=True)
PY
