# A pool is imported by its name.
terraform import gpucap_gpu_pool.example local
