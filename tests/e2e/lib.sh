# Host-side helpers shared by e2e.sh and demo.sh (sourced, bash).

# The machines of the reference topology as Node objects: director (labelled a director),
# rs1..rs3, and rs4 (10.10.24.24, which the cluster-backends test adds to the LAN), each with
# the InternalIPs its namespace has in the VM (dual stack: 10.10.24.N and fd00:24::N). No kubelet runs, so the status is written by hand.
create_reference_nodes() {
  local n name ip
  # director2 is a second director for the failover tests, labelled by them.
  for n in director:10 director2:11 rs1:21 rs2:22 rs3:23 rs4:24; do
    name=${n%%:*} ip=10.10.24.${n#*:}
    kubectl create -f - >/dev/null <<YAML
apiVersion: v1
kind: Node
metadata: {name: $name, labels: {kubernetes.io/hostname: $name}}
YAML
    kubectl patch node "$name" --subresource=status --type=merge \
      -p "{\"status\":{\"addresses\":[{\"type\":\"InternalIP\",\"address\":\"$ip\"},{\"type\":\"InternalIP\",\"address\":\"fd00:24::${n#*:}\"}]}}" >/dev/null
  done
  kubectl label node director lvs-operator.io/director=true >/dev/null
}
