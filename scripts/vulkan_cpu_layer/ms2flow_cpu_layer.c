/*
 * ms2flow CPU Vulkan layer.
 *
 * SAPIEN 2.2 always asks for VK_KHR_external_semaphore_fd (CUDA interop) when it
 * creates its Vulkan device. CPU drivers such as Mesa's lavapipe do not offer
 * that extension, so device creation fails with VK_ERROR_EXTENSION_NOT_PRESENT
 * although SAPIEN never uses it without CUDA. This layer removes, from the
 * device create info, every requested extension the driver does not offer.
 *
 * The loader checks requested extensions against the driver and against the
 * device_extensions listed in each enabled layer's manifest before any layer
 * code runs, which is why ms2flow_cpu_layer.json advertises the fd extensions.
 * Their entry points are stubs that fail; nothing calls them on a CPU.
 */
#include <stdlib.h>
#include <string.h>
#include <vulkan/vulkan.h>
#include <vulkan/vk_layer.h>

#define EXPORT __attribute__((visibility("default")))

static PFN_vkGetInstanceProcAddr next_instance_proc_addr;
static PFN_vkGetDeviceProcAddr next_device_proc_addr;
static VkInstance last_instance;

static VkResult VKAPI_CALL unsupported_fd_call(void) {
    return VK_ERROR_FEATURE_NOT_PRESENT;
}

static VkResult VKAPI_CALL layer_CreateInstance(const VkInstanceCreateInfo *info,
                                                const VkAllocationCallbacks *alloc,
                                                VkInstance *instance) {
    VkLayerInstanceCreateInfo *link = (VkLayerInstanceCreateInfo *)info->pNext;
    while (link && !(link->sType == VK_STRUCTURE_TYPE_LOADER_INSTANCE_CREATE_INFO &&
                     link->function == VK_LAYER_LINK_INFO))
        link = (VkLayerInstanceCreateInfo *)link->pNext;
    if (!link) return VK_ERROR_INITIALIZATION_FAILED;
    next_instance_proc_addr = link->u.pLayerInfo->pfnNextGetInstanceProcAddr;
    link->u.pLayerInfo = link->u.pLayerInfo->pNext;
    PFN_vkCreateInstance create =
        (PFN_vkCreateInstance)next_instance_proc_addr(VK_NULL_HANDLE, "vkCreateInstance");
    VkResult result = create(info, alloc, instance);
    if (result == VK_SUCCESS) last_instance = *instance;
    return result;
}

static VkResult VKAPI_CALL layer_CreateDevice(VkPhysicalDevice gpu, const VkDeviceCreateInfo *info,
                                              const VkAllocationCallbacks *alloc, VkDevice *device) {
    VkLayerDeviceCreateInfo *link = (VkLayerDeviceCreateInfo *)info->pNext;
    while (link && !(link->sType == VK_STRUCTURE_TYPE_LOADER_DEVICE_CREATE_INFO &&
                     link->function == VK_LAYER_LINK_INFO))
        link = (VkLayerDeviceCreateInfo *)link->pNext;
    if (!link) return VK_ERROR_INITIALIZATION_FAILED;
    PFN_vkGetInstanceProcAddr gipa = link->u.pLayerInfo->pfnNextGetInstanceProcAddr;
    next_device_proc_addr = link->u.pLayerInfo->pfnNextGetDeviceProcAddr;
    link->u.pLayerInfo = link->u.pLayerInfo->pNext;

    PFN_vkEnumerateDeviceExtensionProperties enumerate =
        (PFN_vkEnumerateDeviceExtensionProperties)gipa(last_instance,
                                                       "vkEnumerateDeviceExtensionProperties");
    uint32_t count = 0;
    enumerate(gpu, NULL, &count, NULL);
    VkExtensionProperties *offered = calloc(count ? count : 1, sizeof(*offered));
    enumerate(gpu, NULL, &count, offered);

    const char **kept = calloc(info->enabledExtensionCount ? info->enabledExtensionCount : 1,
                               sizeof(*kept));
    uint32_t n_kept = 0;
    for (uint32_t i = 0; i < info->enabledExtensionCount; i++) {
        for (uint32_t j = 0; j < count; j++) {
            if (strcmp(info->ppEnabledExtensionNames[i], offered[j].extensionName) == 0) {
                kept[n_kept++] = info->ppEnabledExtensionNames[i];
                break;
            }
        }
    }
    VkDeviceCreateInfo filtered = *info;
    filtered.enabledExtensionCount = n_kept;
    filtered.ppEnabledExtensionNames = kept;
    PFN_vkCreateDevice create = (PFN_vkCreateDevice)gipa(last_instance, "vkCreateDevice");
    VkResult result = create(gpu, &filtered, alloc, device);
    free(kept);
    free(offered);
    return result;
}

static int is_fd_entry_point(const char *name) {
    return strcmp(name, "vkGetSemaphoreFdKHR") == 0 || strcmp(name, "vkImportSemaphoreFdKHR") == 0 ||
           strcmp(name, "vkGetFenceFdKHR") == 0 || strcmp(name, "vkImportFenceFdKHR") == 0;
}

EXPORT VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL ms2flow_GetDeviceProcAddr(VkDevice device,
                                                                          const char *name) {
    if (strcmp(name, "vkGetDeviceProcAddr") == 0)
        return (PFN_vkVoidFunction)ms2flow_GetDeviceProcAddr;
    PFN_vkVoidFunction next = next_device_proc_addr(device, name);
    if (!next && is_fd_entry_point(name)) return (PFN_vkVoidFunction)unsupported_fd_call;
    return next;
}

EXPORT VKAPI_ATTR PFN_vkVoidFunction VKAPI_CALL ms2flow_GetInstanceProcAddr(VkInstance instance,
                                                                            const char *name) {
    if (strcmp(name, "vkGetInstanceProcAddr") == 0)
        return (PFN_vkVoidFunction)ms2flow_GetInstanceProcAddr;
    if (strcmp(name, "vkGetDeviceProcAddr") == 0)
        return (PFN_vkVoidFunction)ms2flow_GetDeviceProcAddr;
    if (strcmp(name, "vkCreateInstance") == 0) return (PFN_vkVoidFunction)layer_CreateInstance;
    if (strcmp(name, "vkCreateDevice") == 0) return (PFN_vkVoidFunction)layer_CreateDevice;
    return next_instance_proc_addr ? next_instance_proc_addr(instance, name) : NULL;
}
