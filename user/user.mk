# SPDX-License-Identifier: MIT
KDERP_LIB_OBJS :=
