/* petrel's version string, one definition for the daemon, /metrics
 * (petrel_build_info) and the tools. Never includes anything.
 * SPDX-License-Identifier: Apache-2.0 */
#ifndef PETREL_OBS_VERSION_H
#define PETREL_OBS_VERSION_H

#ifndef PETREL_VERSION
#define PETREL_VERSION "0.1.0"
#endif

#endif
