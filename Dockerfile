# Robot image: ROS 2 Humble + Interbotix X-series arm packages + this project, workspaces built with colcon.
#   make docker            (docker build -t postbc-robot:latest .)
#   docker run --rm -it --net=host --privileged -v /dev:/dev postbc-robot:latest \
#       ros2 launch postbc policy.launch.py backend:=interbotix checkpoint:=/runs/policy.safetensors
# The host needs the udev rules (/dev/ttyDXL, RealSense access) and the dialout group: README "Host setup"
# (docker/host-setup.sh installs the rules this image carries).
# GPU inference: build FROM an image with CUDA + ROS 2 Humble, or add the NVIDIA container toolkit and install a CUDA
# torch wheel matching the host driver (TORCH_INDEX below).
#
# The Interbotix part follows Interbotix's installer step by step: xsarm_amd64_install.sh (Interbotix/
# interbotix_ros_manipulators, branch humble, interbotix_ros_xsarms/install/amd64/, read at a4b7e51), function
# install_ros2 as run by `-d humble -n`. Each step names the installer lines it repeats ("installer L158"); every
# difference is deliberate and says why. Not repeated: L471 apt-get upgrade (the base image is the maintained ROS
# image), L252-266 ros-humble-desktop (GUI tools; ros-base plus rosdep's dependencies suffice), the perception
# (AprilTag, L288-311, L327-331) and MATLAB (L340-344) extras (this stack reads its RealSenses through pyrealsense2),
# L360-370 ROS_IP in ~/.bashrc (a ROS 1 setting).
FROM ros:humble-ros-base-jammy

# torch's local version names its build (2.13.0+cpu, 2.13.0+cu126); TORCH_INDEX is the matching PyTorch index. The
# index is an extra one: torch's own dependencies keep resolving from PyPI within the robot constraints.
ARG TORCH_VERSION=2.13.0+cpu
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# The Interbotix commits the project's conformance tests run against (../shared/third_party/README.md): the arm runs
# the code that was tested, not whatever the humble branch holds on the day of the build.
ARG INTERBOTIX_BRANCH=humble
ARG INTERBOTIX_CORE_COMMIT=6da9a7c79508835cad17422059dbe70dc3965cc0
ARG INTERBOTIX_MANIPULATORS_COMMIT=a4b7e51150d604e2f16451b703fa5f324dd52520
ARG INTERBOTIX_TOOLBOXES_COMMIT=8ae347e163506c19e9df16c1fa868e426c08eea6
# librealsense release of the pinned pyrealsense2 (2.55.1.6486, requirements/robot-constraints.txt): its udev rule.
ARG LIBREALSENSE_TAG=v2.55.1
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 MUJOCO_GL=egl

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# installer L158 + L166 (curl git python3-pip), L269-275 (rosdep and build tools, colcon); then what this project's
# nodes need: joy / spacenav teleop, xacro + state publishers, libusb for librealsense, EGL/GL for MuJoCo rendering.
# Unpinned apt versions (hadolint DL3008): the ROS apt repository keeps only each package's latest build, so a
# pinned version stops resolving as soon as a new one is published.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends \
        curl git python3-pip \
        python3-rosdep python3-rosinstall python3-rosinstall-generator python3-wstool build-essential \
        python3-colcon-common-extensions \
        ros-humble-joy ros-humble-spacenav ros-humble-xacro ros-humble-robot-state-publisher \
        ros-humble-joint-state-publisher \
        libusb-1.0-0 libegl1 libgl1 \
    && rm -rf /var/lib/apt/lists/*

# installer L160 (`pip3 install transforms3d`) and L167 (`python3 -m pip install modern_robotics`): the SDK imports
# both (interbotix_common_modules.angle_manipulation, interbotix_xs_modules.xs_robot.arm). Pinned to the releases
# current when this was written; both only need the numpy Ubuntu ships.
RUN python3 -m pip install "transforms3d==0.4.2" "modern_robotics==1.1.1"

# installer L277-286: rosdep sources from scratch. The base image already ran `rosdep init`, so its list is removed
# first, as the installer does on a machine that has one.
RUN rm -f /etc/ros/rosdep/sources.list.d/20-default.list \
    && rosdep init \
    && rosdep update --include-eol-distros

# installer L321-324: the three Interbotix repositories (at the tested commits). L326 clones moveit_visual_tools for
# MoveIt, which stays off (next step).
WORKDIR /opt/interbotix_ws/src
RUN git clone -b "${INTERBOTIX_BRANCH}" https://github.com/Interbotix/interbotix_ros_core.git \
    && git clone -b "${INTERBOTIX_BRANCH}" https://github.com/Interbotix/interbotix_ros_manipulators.git \
    && git clone -b "${INTERBOTIX_BRANCH}" https://github.com/Interbotix/interbotix_ros_toolboxes.git \
    && git -C interbotix_ros_core checkout --detach "${INTERBOTIX_CORE_COMMIT}" \
    && git -C interbotix_ros_manipulators checkout --detach "${INTERBOTIX_MANIPULATORS_COMMIT}" \
    && git -C interbotix_ros_toolboxes checkout --detach "${INTERBOTIX_TOOLBOXES_COMMIT}" \
    # installer L332-335 removes three COLCON_IGNOREs: interbotix_ros_xseries (xs_sdk, xs_msgs) and the MoveIt pair
    # interbotix_moveit_interface + interbotix_moveit_interface_msgs. Only the first here: this stack does not use
    # MoveIt, and the pair needs MoveIt and moveit_visual_tools (an unpinned branch). The two stay ignored together,
    # never the interface without its msgs. `rm` without -f: a file moved upstream fails the build here.
    && rm interbotix_ros_core/interbotix_ros_xseries/COLCON_IGNORE \
    && test -f interbotix_ros_toolboxes/interbotix_common_toolbox/interbotix_moveit_interface/COLCON_IGNORE \
    && test -f interbotix_ros_toolboxes/interbotix_common_toolbox/interbotix_moveit_interface_msgs/COLCON_IGNORE \
    # installer L336-338: the submodules xs_sdk builds from (an empty interbotix_xs_driver fails xs_sdk's
    # find_package(interbotix_xs_driver)); at the commits the superproject records.
    && git -C interbotix_ros_core submodule update --init interbotix_ros_xseries/dynamixel_workbench_toolbox \
    && git -C interbotix_ros_core submodule update --init interbotix_ros_xseries/interbotix_xs_driver \
    && test -f interbotix_ros_core/interbotix_ros_xseries/interbotix_xs_driver/package.xml \
    && test -f interbotix_ros_core/interbotix_ros_xseries/dynamixel_workbench_toolbox/package.xml \
    # installer L345-347: Interbotix's udev rule (/dev/ttyDXL for the U2D2, its latency timer at 1 ms). udev runs on
    # the host, not in a container, so `udevadm` is not run here; the rule sits where the installer puts it so the
    # host can install it from the image (docker/host-setup.sh).
    && cp interbotix_ros_core/interbotix_ros_xseries/interbotix_xs_sdk/99-interbotix-udev.rules /etc/udev/rules.d/

# RealSense: librealsense's udev rule (not in the pyrealsense2 wheel), for the host like the one above.
ADD https://raw.githubusercontent.com/IntelRealSense/librealsense/${LIBREALSENSE_TAG}/config/99-realsense-libusb.rules \
    /etc/udev/rules.d/99-realsense-libusb.rules

# installer L348-350: rosdep install, then colcon build, for the packages xsarm_control.launch.py starts (xs_sdk with
# its driver and dynamixel_workbench_toolbox, xs_msgs, xs_modules, common_modules, xsarm_descriptions,
# xsarm_control) and their dependencies. The installer builds every package, pulling in Gazebo, ros2_control and rviz
# plugins this stack never starts. rosdep's -r (as the installer): interbotix_xs_modules also lists message packages
# of Interbotix's mobile bases (interbotix_slate_msgs, kobuki) that have no rosdep key and are not used by the arm.
WORKDIR /opt/interbotix_ws
RUN apt-get update \
    && mapfile -t pkgs < <(colcon list --packages-up-to interbotix_xsarm_control --paths-only) \
    && rosdep install --from-paths "${pkgs[@]}" --ignore-src -r -y --rosdistro humble \
    && rm -rf /var/lib/apt/lists/* \
    && source /opt/ros/humble/setup.bash \
    && colcon build --packages-up-to interbotix_xsarm_control \
    && python3 -c "import modern_robotics, transforms3d"

# This project: the library into the system Python that ROS uses (rclpy comes from apt, not the pip extra), with the
# robot's tested versions as constraints (numpy below 2: Humble's apt extensions are built against numpy 1.x).
COPY postbc_core /opt/postbc/postbc_core
COPY README.md /opt/postbc/README.md
COPY requirements /opt/postbc/requirements
RUN python3 -m pip install "pip==24.3.1" \
    && python3 -m pip install -c /opt/postbc/requirements/robot-constraints.txt "torch==${TORCH_VERSION}" \
        --extra-index-url "${TORCH_INDEX}" \
    && python3 -m pip install -c /opt/postbc/requirements/robot-constraints.txt -e "/opt/postbc/postbc_core[realsense,codecs,console]"

# The ROS 2 package (nodes + launch files) in its own workspace, overlaid on Interbotix's. setup.py installs the
# top-level launch/ files (../../../launch from the package), so the repository layout is kept under /opt/postbc.
COPY ros2_ws /opt/postbc/ros2_ws
COPY launch /opt/postbc/launch
COPY calibration /opt/postbc/calibration
WORKDIR /opt/postbc/ros2_ws
RUN source /opt/interbotix_ws/install/setup.bash && colcon build --symlink-install

COPY docker/entrypoint.sh /entrypoint.sh
ENTRYPOINT ["/entrypoint.sh"]
# `docker stop` sends this to PID 1 (ros2 launch, exec'd by the entrypoint). ros2 launch answers SIGINT by stopping
# its nodes in order within its grace period (the driver holds the arm, the finetune manager keeps its checkpoint);
# on SIGTERM it exits at once and leaves its children to be killed with the container.
STOPSIGNAL SIGINT
CMD ["bash"]
