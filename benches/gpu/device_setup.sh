# Sourced on the GPU machine before check.sh (`source benches/gpu/device_setup.sh`):
# unpacks the Debian packages prepare.sh put in .gl/ (the Vulkan loader, and libEGL
# with libglvnd, without which NVIDIA's 580 driver returns no vkCreateInstance in a
# headless container) and points the loader at the driver's ICD; and unpacks the
# binaries prepare.sh gzipped into .devbin/.
for z in .devbin/*.gz; do [[ -e $z ]] && gunzip -kf "$z"; done
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
vendor=/usr/share/glvnd/egl_vendor.d/10_nvidia.json
if [[ ! -e $vendor ]]; then
    mkdir -p "$(dirname "$vendor")"
    echo '{"file_format_version": "1.0.0", "ICD": {"library_path": "libEGL_nvidia.so.0"}}' > "$vendor"
fi
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
