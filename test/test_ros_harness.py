# Copyright 2026 sdxl_ros contributors
# Licensed under the Apache License, Version 2.0
"""The harness refuses to start ROS processes unless DDS is confined to loopback."""

from ros_harness import confinement_problem, write_parameters_file, yaml_value


def test_missing_or_unreadable_profile_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv('ROS_AUTOMATIC_DISCOVERY_RANGE', 'SYSTEM_DEFAULT')
    monkeypatch.delenv('FASTDDS_DEFAULT_PROFILES_FILE', raising=False)
    assert 'not set' in confinement_problem()
    monkeypatch.setenv('FASTDDS_DEFAULT_PROFILES_FILE', str(tmp_path / 'missing.xml'))
    assert 'not readable' in confinement_problem()
    profile = tmp_path / 'profile.xml'
    profile.write_text('<profiles/>')
    monkeypatch.setenv('FASTDDS_DEFAULT_PROFILES_FILE', str(profile))
    monkeypatch.delenv('FASTRTPS_DEFAULT_PROFILES_FILE', raising=False)
    assert confinement_problem() == ''
    monkeypatch.setenv('FASTRTPS_DEFAULT_PROFILES_FILE', str(tmp_path / 'other.xml'))
    assert 'FASTRTPS_DEFAULT_PROFILES_FILE' in confinement_problem()
    monkeypatch.setenv('FASTRTPS_DEFAULT_PROFILES_FILE', str(profile))
    assert confinement_problem() == ''
    monkeypatch.setenv('ROS_AUTOMATIC_DISCOVERY_RANGE', 'SUBNET')
    assert 'ROS_AUTOMATIC_DISCOVERY_RANGE' in confinement_problem()


def test_parameters_file(tmp_path):
    path = write_parameters_file(tmp_path / 'p.yaml', {
        'base_model': 'tiny', 'refiner_model': '', 'max_queue': 2, 'default_guidance_scale': 7.0,
        'autostart': True, 'default_scheduler': 'DPM++ 2M Karras'})
    text = path.read_text()
    assert text.startswith('/**:\n  ros__parameters:\n')
    assert '    refiner_model: ""\n' in text and '    default_guidance_scale: 7.0\n' in text
    assert '    autostart: true\n' in text and '"DPM++ 2M Karras"' in text
    assert yaml_value(3) == '3'
