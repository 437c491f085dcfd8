include $(sort $(wildcard $(BR2_EXTERNAL_PICOMAIL_PATH)/package/*/*.mk))
